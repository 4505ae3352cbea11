#!/usr/bin/env python3
"""Node-to-node sync benchmarks for tandem-node (driven by bench/sync.sh).

Python 3.11, standard library only. Every node is started here with Popen,
its PID is appended to --pidfile (so sync.sh's EXIT trap can stop it if this
process dies), and it is stopped by PID (SIGTERM, then SIGKILL after a
deadline) in a `finally`. All traffic is on 127.0.0.1; ports are picked at
run time. See bench/SYNC.md for what each case measures.
"""

import argparse
import datetime as dt
import filecmp
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import zlib

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
CLK_TCK = os.sysconf("SC_CLK_TCK")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RECEIVED = re.compile(
    r"received (?P<path>.+?) from (?P<peer>\S+): (?P<size>[\d.]+ \w+) in (?P<took>\S+) "
    r"\((?P<net>[\d.]+ \w+) over the network, (?P<reused>[\d.]+ \w+) reused locally\)"
)
UNITS = {"B": 1, "KiB": KIB, "MiB": MIB, "GiB": GIB, "TiB": 1024 * GIB}



def stop_process(proc, label, timeout=20):
    """SIGTERM, then SIGKILL after `timeout` s; nothing when it has exited."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"  ! {label} (pid {proc.pid}) ignored SIGTERM for {timeout}s; killing", flush=True)
        proc.kill()
        proc.wait(10)

class BenchError(Exception):
    pass


def on_term(signum, frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------- helpers


def parse_size(s):
    num, unit = s.split()
    return float(num) * UNITS[unit]


def fmt_bytes(n):
    if n is None:
        return "—"
    if n < 10 * KIB:
        return f"{n:.0f} B"
    if n < 10 * MIB:
        return f"{n / KIB:.1f} KiB"
    if n < 10 * GIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / GIB:.2f} GiB"


def fmt_s(x):
    if x is None:
        return "—"
    if x < 1:
        return f"{x * 1000:.1f} ms"
    return f"{x:.2f} s"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pct(xs, p):
    """Nearest-rank percentile (p99 of 50 samples is the maximum)."""
    xs = sorted(xs)
    if not xs:
        return None
    k = max(1, -(-len(xs) * p // 100))  # ceil
    return xs[int(k) - 1]


def log_ts(line):
    """UTC timestamp at the start of a tracing line, as epoch seconds."""
    try:
        stamp = line.split()[0].rstrip("Z")
        return dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.timezone.utc).timestamp()
    except (ValueError, IndexError):
        return None


def psi(kind):
    """'some avg10' of /proc/pressure/KIND: % of time tasks waited (busy machine)."""
    try:
        with open(f"/proc/pressure/{kind}") as f:
            return f"{float(f.readline().split()[1].split('=')[1]):.0f}%"
    except (OSError, IndexError, ValueError):
        return "?"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def sync_disks():
    run(["sync"])


def rmtree(p):
    if os.path.lexists(p):
        subprocess.run(["rm", "-rf", "--", p], check=True)


def hline(title):
    print(f"\n=== {title} ===", flush=True)
    print(f"  (machine now: load {os.getloadavg()[0]:.1f}, CPU pressure {psi('cpu')}, "
          f"IO pressure {psi('io')})", flush=True)


# ---------------------------------------------------------------- nodes


class Ports:
    def __init__(self):
        self.used = set()

    def get(self):
        for _ in range(100):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
            s.close()
            if p not in self.used:
                self.used.add(p)
                return p
        raise BenchError("no free port")


class Log:
    """Incremental reader of a node's log file."""

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.buf = b""
        self.lines = []

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return []
        self.pos += len(data)
        data = self.buf + data
        parts = data.split(b"\n")
        self.buf = parts.pop()
        new = [ANSI.sub("", p.decode("utf-8", "replace")) for p in parts]
        self.lines.extend(new)
        return new


class Node:
    def __init__(self, bench, name, d, state, port, peer_ports, log):
        self.bench, self.name, self.dir, self.state = bench, name, d, state
        self.port, self.peer_ports = port, peer_ports
        self.peer_ids = {}  # port -> node id of the peer there (TLS binaries)
        self.dial_addr = {}  # port -> the address dialed for it instead (a WAN proxy)
        self.proxy = None  # that proxy (an Aux)
        self.logpath = log
        self.log = Log(log)
        self.proc = None
        self.started_wall = None
        self.received = {}  # path -> (wall ts, net bytes, reused bytes)

    def start(self):
        cmd = [
            os.path.join(self.bench.bin, "tandem-node"),
            "--dir", self.dir,
            "--state-dir", self.state,
            "--listen", f"127.0.0.1:{self.port}",
            "--name", self.name,
        ]
        for p in self.peer_ports:
            # ID@ADDR trusts the peer (binaries since db5f45b); plain ADDR for
            # older binaries, which have no ids.
            pid = self.peer_ids.get(p)
            addr = self.dial_addr.get(p, f"127.0.0.1:{p}")
            cmd += ["--peer", f"{pid}@{addr}" if pid else addr]
        env = dict(os.environ, NO_COLOR="1")
        env.setdefault("RUST_LOG", "info")
        logf = open(self.logpath, "ab")
        self.started_wall = time.time()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=logf, env=env)
        logf.close()
        self.bench.track(self)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def poll_log(self):
        new = self.log.poll()
        for line in new:
            m = RECEIVED.search(line)
            if m:
                self.received[m["path"]] = (log_ts(line), parse_size(m["net"]),
                                            parse_size(m["reused"]))
        return new

    def wait_line(self, pattern, timeout, what=None):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        for line in self.log.lines:
            if rx.search(line):
                return line
        while time.monotonic() < deadline:
            for line in self.poll_log():
                if rx.search(line):
                    return line
            if not self.alive():
                raise BenchError(f"node {self.name} exited (rc {self.proc.returncode}) "
                                 f"while waiting for {what or pattern}; log {self.logpath}")
            time.sleep(0.005)
        raise BenchError(f"node {self.name}: no {what or pattern!r} within {timeout}s; "
                         f"log {self.logpath}")

    def status(self, key):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * KIB
        except FileNotFoundError:
            pass
        return None

    def cpu_ticks(self):
        with open(f"/proc/{self.pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        # fields 14 and 15 of stat (utime, stime); rest[0] is field 3.
        return int(rest[11]) + int(rest[12])

    def thread_cpu(self):
        """CPU seconds by thread name (tokio workers summed)."""
        out = {}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{tid}/stat") as f:
                    raw = f.read()
            except FileNotFoundError:
                continue
            name = raw[raw.index("(") + 1:raw.rindex(")")]
            name = re.sub(r"[-_]?\d+$", "", name)
            rest = raw.rsplit(")", 1)[1].split()
            u, k = out.get(name, (0, 0))
            out[name] = (u + int(rest[11]) / CLK_TCK, k + int(rest[12]) / CLK_TCK)
        return out

    def stop(self, timeout=20):
        stop_process(self.proc, f"node {self.name}", timeout)


class Aux:
    """A helper process (the WAN proxy, an rsync daemon), logged to a file
    and stopped by PID like the nodes."""

    def __init__(self, bench, name, cmd, log):
        self.bench, self.name, self.cmd, self.logpath = bench, name, cmd, log
        self.log = Log(log)
        self.proc = None

    def start(self, case_scoped=False):
        """case_scoped: stopped by stop_aux at the end of the case, not with
        the nodes by stop_all."""
        logf = open(self.logpath, "ab")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT)
        logf.close()
        self.bench.track(self, case_scoped)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_line(self, pattern, timeout):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        new = self.log.lines
        while time.monotonic() < deadline:
            for line in new:
                if rx.search(line):
                    return line
            new = self.log.poll()
            if not self.alive():
                raise BenchError(f"{self.name} exited (rc {self.proc.returncode}); log {self.logpath}")
            time.sleep(0.005)
        raise BenchError(f"{self.name}: no {pattern!r} within {timeout}s; log {self.logpath}")

    def wait_port(self, port, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if not self.alive():
                    raise BenchError(f"{self.name} exited (rc {self.proc.returncode}); "
                                     f"log {self.logpath}")
                time.sleep(0.02)
        raise BenchError(f"{self.name}: nothing listens on port {port} after {timeout}s")

    def stop(self, timeout=20):
        stop_process(self.proc, self.name, timeout)


# ---------------------------------------------------------------- ss


def ss_links(ports):
    """Established TCP sockets touching `ports`: {(local, peer): bytes_sent}."""
    flt = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( {flt} )"],
                         capture_output=True, text=True, check=True).stdout
    socks = {}
    cur = None
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            f = line.split()
            cur = (f[-2], f[-1])
            socks[cur] = {"bytes_sent": 0, "bytes_received": 0, "bytes_acked": 0}
        elif cur is not None:
            for key in ("bytes_sent", "bytes_received", "bytes_acked"):
                m = re.search(rf"\b{key}:(\d+)", line)
                if m:
                    socks[cur][key] = int(m.group(1))
    return socks


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def ss_delta(before, after, a, b):
    """Bytes sent A->B and B->A between two snapshots (sockets that appeared
    in between count from zero; sockets that vanished are reported)."""
    sent = {"A": 0, "B": 0}
    notes = []
    for key, v in after.items():
        local, peer = port_of(key[0]), port_of(key[1])
        owner = "A" if (local == a.port or peer == b.port) else "B"
        prev = before.get(key, {}).get("bytes_sent", 0)
        if key not in before:
            notes.append(f"new connection {key[0]}->{key[1]}")
        sent[owner] += v["bytes_sent"] - prev
    for key in before:
        if key not in after:
            notes.append(f"connection {key[0]}->{key[1]} closed (its last bytes are not counted)")
    return sent["A"], sent["B"], notes


# ---------------------------------------------------------------- data


def write_random(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MIB)
            f.write(rng.randbytes(n))
            left -= n


def make_tree(root, nfiles, size, per_dir, seed):
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    for i in range(nfiles):
        d = os.path.join(root, f"d{i // per_dir:03d}") if per_dir else root
        if per_dir and i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        write_random(os.path.join(d, f"f{i:05d}.bin"), size, rng)


def tree_files(root):
    out = {}
    for dp, dns, fns in os.walk(root):
        for fn in fns:
            p = os.path.join(dp, fn)
            out[os.path.relpath(p, root)] = os.lstat(p)
    return out


def compare_trees(a, b):
    """(ok, message): same names, sizes and bytes; also counts mtime/mode differences."""
    fa, fb = tree_files(a), tree_files(b)
    missing = sorted(set(fa) - set(fb))
    extra = sorted(set(fb) - set(fa))
    bad, mtime, mode = [], 0, 0
    for rel in sorted(set(fa) & set(fb)):
        sa, sb = fa[rel], fb[rel]
        if sa.st_size != sb.st_size or not filecmp.cmp(os.path.join(a, rel),
                                                       os.path.join(b, rel), shallow=False):
            bad.append(rel)
        mtime += sa.st_mtime_ns != sb.st_mtime_ns
        mode += sa.st_mode != sb.st_mode
    ok = not (missing or extra or bad)
    msg = (f"{len(fb)} files; missing {len(missing)}, extra {len(extra)}, differing {len(bad)}; "
           f"mtime differs on {mtime}, mode on {mode}")
    if missing:
        msg += f"; first missing: {missing[:3]}"
    if extra:
        msg += f"; first extra: {extra[:3]}"
    if bad:
        msg += f"; first differing: {bad[:3]}"
    return ok, msg


def same_file(a, b):
    try:
        return filecmp.cmp(a, b, shallow=False)
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------- bench


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = args.bin
        self.work = args.work
        self.ports = Ports()
        self.nodes = []  # nodes, and the WAN proxies of their pairs
        self.aux = []  # helpers that live for a whole case (rsync daemon and its proxy)
        self.results = {}
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.have_rsync = shutil.which("rsync") is not None
        # Binaries since db5f45b link over TLS with trusted peers only and
        # have `tandem-node id`/`trust`; older ones take plain --peer ADDR.
        probe = os.path.join(self.work, "id-probe")
        self.tls = self.node_cmd(os.path.join(probe, "dir"), os.path.join(probe, "state"),
                                 "id", check=False) is not None
        rmtree(probe)
        print(f"peers:   {'--peer ID@ADDR (ids from tandem-node id; TLS)' if self.tls else '--peer ADDR (binary without tandem-node id: pre-TLS)'}",
              flush=True)

    def node_cmd(self, d, state, *sub, check=True):
        """Runs `tandem-node --dir D --state-dir STATE SUB...` (id, trust) with
        a deadline; returns its last stdout line, or None on failure when
        check is False."""
        cmd = [os.path.join(self.bin, "tandem-node"), "--dir", d, "--state-dir", state, *sub]
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=min(self.args.timeout, 60))
        except subprocess.TimeoutExpired:
            if check:
                raise BenchError(f"{' '.join(cmd)}: no answer within 60 s")
            return None
        lines = r.stdout.strip().splitlines()
        if r.returncode != 0 or not lines:
            if check:
                raise BenchError(f"{' '.join(cmd)} failed (rc {r.returncode}): {r.stderr.strip()}")
            return None
        return lines[-1].strip()

    def track(self, node, case_scoped=False):
        (self.aux if case_scoped else self.nodes).append(node)
        with open(self.args.pidfile, "a") as f:
            f.write(f"{node.pid}\n")

    def stop_all(self):
        # Nodes first, then the proxies between them (a proxy stopped first
        # would make the nodes log a lost link before their SIGTERM).
        for n in sorted(self.nodes, key=lambda n: not isinstance(n, Node)):
            try:
                n.stop()
            except Exception as e:  # keep stopping the others
                print(f"  ! cannot stop {n.name} pid {n.pid}: {e}", file=sys.stderr)
        self.nodes = [n for n in self.nodes if n.alive()]

    def stop_aux(self):
        for n in self.aux:
            try:
                n.stop()
            except Exception as e:
                print(f"  ! cannot stop {n.name} pid {n.pid}: {e}", file=sys.stderr)
        self.aux = [n for n in self.aux if n.alive()]

    def wan_proxy(self, tag, target_port, case_scoped=False):
        """Starts bench's WAN link (node/examples/wan_link.rs) on a free port,
        forwarding to target_port; returns (proxy, its port). Its start line
        gives the delay and rate it applies (self.wan = (delay s, bytes/s))."""
        port = self.ports.get()
        proxy = Aux(self, f"WAN link {tag}",
                    [self.args.wan_link, "--listen", f"127.0.0.1:{port}",
                     "--to", f"127.0.0.1:{target_port}", "--delay", self.args.wan_delay,
                     "--rate", self.args.wan_rate],
                    os.path.join(self.logs, f"proxy-{tag}.log")).start(case_scoped)
        line = proxy.wait_line(r"listening on", 30)
        m = re.search(r"\[delay_ns=(\d+) rate=(\d+)\]", line)
        if not m:
            raise BenchError(f"cannot read the WAN link's settings from {line!r}")
        self.wan = (int(m[1]) / 1e9, int(m[2]))
        return proxy, port

    def wan_probe(self):
        """Starts and stops one WAN link to learn the delay and rate it
        applies (and that the binary works) before any case needs them."""
        proxy, _ = self.wan_proxy("probe", self.ports.get())
        proxy.stop()
        self.nodes.remove(proxy)
        delay, rate = self.wan
        print(f"wan:     {self.args.wan_link}: {delay * 1000:g} ms one way, "
              + (f"{rate * 8 / 1e6:g} Mbit/s" if rate else "unlimited") + " each way",
              flush=True)

    @staticmethod
    def wan_bytes(proxy, conn=None, timeout=5):
        """(bytes to the target, bytes from it) through a WAN link: of its
        connection number `conn` (waits for its closing line), or the
        proxy's totals (written when it stops)."""
        rx = (re.compile(rf"#{conn} from \S+ closed after .*; to target (\d+) B, from target "
                         r"(\d+) B") if conn else
              re.compile(r"totals: .*to target (\d+) B, from target (\d+) B"))
        deadline = time.monotonic() + timeout
        new = proxy.log.lines
        while True:
            for line in new:
                m = rx.search(line)
                if m:
                    return int(m[1]), int(m[2])
            if time.monotonic() > deadline:
                return None, None
            time.sleep(0.01)
            new = proxy.log.poll()

    def wan_floor(self, nbytes):
        """bytes ÷ bandwidth + one round trip: the link's limit."""
        delay, rate = self.wan
        return (nbytes / rate if rate else 0) + 2 * delay

    def pair(self, tag, dir_a, dir_b, start_b=True, steady=False, wan=False):
        """Two nodes A and B that dial each other; returns (A, B). B is not
        started when start_b is False (call B.start() later). wan: only B
        dials, through a WAN proxy in front of A (as DIAL=b, so every byte of
        the pair crosses the proxy, on one link)."""
        pa, pb = self.ports.get(), self.ports.get()
        base = os.path.join(self.work, tag)
        os.makedirs(base, exist_ok=True)
        a = Node(self, "A", dir_a, os.path.join(base, "state-A"), pa,
                 [pb] if self.args.dial == "both" and not wan else [],
                 os.path.join(self.logs, f"{tag}-A.log"))
        b = Node(self, "B", dir_b, os.path.join(base, "state-B"), pb, [pa],
                 os.path.join(self.logs, f"{tag}-B.log"))
        if wan:
            b.proxy, via = self.wan_proxy(tag, pa)
            b.dial_addr = {pa: f"127.0.0.1:{via}"}
        if self.tls:
            # Ids before either node starts (the key is made on first use in
            # the state folder the node will use); each trusts the other.
            ida = self.node_cmd(a.dir, a.state, "id")
            idb = self.node_cmd(b.dir, b.state, "id")
            b.peer_ids = {pa: ida}
            if a.peer_ports:
                a.peer_ids = {pb: idb}
            else:  # only B dials: A must trust B for the link to come up
                self.node_cmd(a.dir, a.state, "trust", idb, "--name", "B")
        a.start()
        a.wait_line(r"\bindexed ", self.args.timeout, "indexed line")
        if start_b:
            b.start()
            b.wait_line(r"\bindexed ", self.args.timeout, "indexed line")
            a.wait_line(r"peer B connected", self.args.timeout, "'peer B connected'")
            b.wait_line(r"peer A connected", self.args.timeout, "'peer A connected'")
            if steady and a.peer_ports:
                # A's dial to B backs off 0.1, 0.2, 0.4 ... s from A's start, so its
                # next attempt (a second link, one of the two then closed) comes at
                # most 2x(B start - A start) + 0.1 s after A's start: wait past it.
                until = a.started_wall + 2 * (b.started_wall - a.started_wall) + 0.5
                time.sleep(max(0.0, until - time.time()))
        return a, b

    def wait_received(self, node, rel, timeout, since_count=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            node.poll_log()
            if rel in node.received:
                return node.received[rel]
            if not node.alive():
                raise BenchError(f"node {node.name} exited; log {node.logpath}")
            time.sleep(0.005)
        raise BenchError(f"{rel} never reached {node.name} within {timeout}s")

    def log_problems(self, tag_prefix):
        """WARN/ERROR lines of this case's node logs, deduplicated. Lines
        logged after the first SIGTERM of a pair (our teardown) are only
        counted; "cannot reach peer ... refused" (since TLS: "cannot link with
        peer ... refused") before the other node is up is expected and left
        out, and so is the start-up warning "RUNNING AS ROOT" (the benchmark
        runs as root on the project's machines)."""
        groups = {}
        for fn in sorted(os.listdir(self.logs)):
            if fn.startswith(tag_prefix + "-") and fn[:-len("-A.log")] not in groups:
                groups[fn[:-len("-A.log")]] = [g for g in (fn[:-len("A.log")] + x for x in
                                                           ("A.log", "B.log"))
                                               if os.path.exists(os.path.join(self.logs, g))]
        seen, shutdown = {}, 0
        for files in groups.values():
            lines = {}
            for fn in files:
                with open(os.path.join(self.logs, fn), errors="replace") as f:
                    lines[fn] = [ANSI.sub("", l.rstrip("\n")) for l in f]
            cutoff = min((log_ts(l) for ls in lines.values() for l in ls
                          if "SIGTERM received" in l), default=None)
            for fn, ls in lines.items():
                for line in ls:
                    if " WARN " not in line and " ERROR " not in line:
                        continue
                    # "cannot reach peer" before TLS, "cannot link with peer" since
                    if (("cannot reach peer" in line or "cannot link with peer" in line)
                            and "Connection refused" in line):
                        continue
                    if "RUNNING AS ROOT" in line:  # the benchmark runs as root on some machines
                        continue
                    ts = log_ts(line)
                    if cutoff is not None and ts is not None and ts >= cutoff:
                        shutdown += 1
                        continue
                    msg = line.split(None, 1)[1] if " " in line else line
                    k = (fn[-len("A.log"):], re.sub(r"\d+", "N", msg))
                    if k not in seen:
                        seen[k] = [0, f"{fn}: {line}"]
                    seen[k][0] += 1
        problems = [f"{c}x in this case's logs, e.g. {ex}" for c, ex in seen.values()]
        if problems:
            print("  node log WARN/ERROR lines (deduplicated by shape):")
            for p in problems[:30]:
                print(f"    {p}")
            if len(problems) > 30:
                print(f"    ... {len(problems) - 30} more kinds")
        else:
            print("  node logs: no WARN/ERROR lines before shutdown (besides the expected "
                  "start-up 'cannot reach peer ... refused' and 'RUNNING AS ROOT')")
        if shutdown:
            print(f"  ({shutdown} WARN/ERROR lines during our shutdown of the nodes, not listed)")
        return problems

    # ------------------------------------------------------------ case 1

    def case_latency(self, key="latency", tag="lat",
                     title="case 1: a new 4 KiB file A -> B (propagation latency)", wan=False):
        hline(title)
        n = self.args.samples
        base = os.path.join(self.work, tag)
        da, db, stage = (os.path.join(base, x) for x in ("A", "B", "stage"))
        for d in (da, db, stage):
            os.makedirs(d, exist_ok=True)
        rng = random.Random(1)
        res = {}
        a, b = self.pair(tag, da, db, steady=True, wan=wan)
        if wan:
            delay, rate = self.wan
            res["link"] = {"delay": delay, "rate": rate}
            print(f"  B dials A through the WAN link: {delay * 1000:g} ms one way, "
                  f"{rate * 8 / 1e6:g} Mbit/s each way; one crossing with 4 KiB = "
                  f"{fmt_s(delay + (4 * KIB / rate if rate else 0))}", flush=True)
        try:
            for mode in ("mv", "write"):
                lat, timeouts = [], 0
                # one warm-up sample, not counted
                for i in range(-1, n):
                    name = f"{mode}-{i + 1:03d}.bin"
                    data = rng.randbytes(4 * KIB)
                    target, dest = os.path.join(da, name), os.path.join(db, name)
                    if mode == "mv":
                        src = os.path.join(stage, name)
                        with open(src, "wb") as f:
                            f.write(data)
                        t0 = time.perf_counter()
                        os.rename(src, target)
                    else:
                        t0 = time.perf_counter()
                        with open(target, "wb") as f:
                            f.write(data)
                    deadline = t0 + self.args.sample_timeout
                    t1 = None
                    while True:
                        now = time.perf_counter()
                        try:
                            st = os.stat(dest)
                            if st.st_size == len(data):
                                with open(dest, "rb") as f:
                                    if f.read() == data:
                                        t1 = time.perf_counter()
                                        break
                        except FileNotFoundError:
                            pass
                        if now > deadline:
                            break
                        time.sleep(0.001)
                    if i < 0:
                        print(f"  {mode}: warm-up sample {fmt_s(t1 - t0) if t1 else 'TIMEOUT'}"
                              " (not counted)")
                    elif t1 is None:
                        timeouts += 1
                        print(f"  {mode} sample {i + 1}: TIMEOUT after "
                              f"{self.args.sample_timeout}s", flush=True)
                    else:
                        lat.append(t1 - t0)
                    time.sleep(self.args.gap)
                lat.sort()
                r = {
                    "samples": len(lat), "timeouts": timeouts,
                    "median": median(lat), "p90": pct(lat, 90), "p99": pct(lat, 99),
                    "min": lat[0] if lat else None, "max": lat[-1] if lat else None,
                    "all": lat,
                }
                res[mode] = r
                print(f"  {mode}: " + " ".join(f"{x * 1000:.1f}" for x in lat) + " (ms, sorted)")
                print(f"  {mode}: n={len(lat)} timeouts={timeouts} median {fmt_s(r['median'])} "
                      f"p90 {fmt_s(r['p90'])} p99 {fmt_s(r['p99'])} min {fmt_s(r['min'])} "
                      f"max {fmt_s(r['max'])}", flush=True)
        finally:
            self.stop_all()
        res["problems"] = self.log_problems(tag)
        self.results[key] = res
        rmtree(base)

    # ------------------------------------------------------------ cases 2, 3 (+6)

    def slow(self, label, fn, *a):
        """Runs an untimed step; says so when it is slow (a busy shared disk)."""
        t0 = time.perf_counter()
        r = fn(*a)
        d = time.perf_counter() - t0
        if d > 3:
            print(f"    (untimed step '{label}' took {d:.1f}s)", flush=True)
        return r

    def time_copy(self, cmd, dst, keep):
        """(seconds with the final sync, seconds of the copy command alone)."""
        self.slow(f"rm {os.path.basename(dst)}", rmtree, dst)
        self.slow("sync before", sync_disks)
        t0 = time.perf_counter()
        run(cmd)
        t1 = time.perf_counter()
        sync_disks()
        t = time.perf_counter() - t0
        if not keep:
            self.slow(f"rm {os.path.basename(dst)}", rmtree, dst)
            self.slow("sync after", sync_disks)
        return t, t1 - t0

    def case_initial(self, key, title, nfiles, size, per_dir, runs, need_bytes, idle=False):
        hline(title)
        # Many small files: keep every copy until the case ends. ext4 without
        # a journal (as /tmp here) skips inodes freed in the last 60-300 s when
        # it allocates new ones, so creating 20,000 files just after deleting
        # 20,000 is several times slower -- deleting between runs would punish
        # whichever tool runs next.
        keep = nfiles >= 1000
        if keep:
            need_bytes = max(need_bytes, (3 * runs + 1) * (nfiles * max(size, 4 * KIB) + nfiles * 512))
        free = shutil.disk_usage(self.work).free
        if free < need_bytes:
            print(f"  SKIPPED: {fmt_bytes(free)} free in {self.work}, this case needs "
                  f"{fmt_bytes(need_bytes)}", flush=True)
            self.results[key] = {"skipped": f"{fmt_bytes(free)} free, need {fmt_bytes(need_bytes)}"}
            return
        base = os.path.join(self.work, key)
        src = os.path.join(base, "A")
        total = nfiles * size
        t0 = time.perf_counter()
        make_tree(src, nfiles, size, per_dir, seed=zlib.crc32(key.encode()))
        sync_disks()
        print(f"  made {nfiles} files x {fmt_bytes(size)} = {fmt_bytes(total)} in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        rows = []
        try:
            for r in range(1, runs + 1):
                row = {"run": r}
                row["load"] = os.getloadavg()[0]
                row["psi_cpu"] = psi("cpu")
                cpd, rsd = os.path.join(base, f"cp-r{r}"), os.path.join(base, f"rsync-r{r}")
                row["cp"], row["cp_nosync"] = self.time_copy(["cp", "-a", src, cpd], cpd, keep)
                if self.have_rsync:
                    row["rsync"], row["rsync_nosync"] = self.time_copy(
                        ["rsync", "-a", src + "/", rsd + "/"], rsd, keep)
                floor = self.args.transfer_floor
                if key == "1gib" and floor and os.access(floor, os.X_OK):
                    # The floor under this row: the same tree over one TLS
                    # connection, each file made durable and renamed into
                    # place; then again with BLAKE3 over every byte on both
                    # ends.
                    for col, env in (("floor", "0"), ("floor_hash", "1"),
                                     ("floor_hash_recv", "receiver")):
                        fd, tmp = os.path.join(base, f"{col}-r{r}"), os.path.join(base, f"{col}-tmp")
                        row[col], _ = self.time_copy(
                            ["env", f"FLOOR_HASH={env}", floor, src, fd, tmp], fd, keep)
                        rmtree(tmp)
                row.update(self.tandem_initial(key, r, src, base, nfiles, idle, keep))
                rows.append(row)
                ratio = row["tandem"] / row["cp"]
                print(f"  run {r} (load {row['load']:.1f}, CPU pressure {row['psi_cpu']}): cp -a {fmt_s(row['cp'])} "
                      f"(without the sync {fmt_s(row['cp_nosync'])}), "
                      + (f"rsync -a {fmt_s(row['rsync'])} (without the sync "
                         f"{fmt_s(row['rsync_nosync'])}), " if "rsync" in row else "")
                      + (f"transfer floor {fmt_s(row['floor'])} (with BLAKE3 on both ends "
                         f"{fmt_s(row['floor_hash'])}, on the receiver only "
                         f"{fmt_s(row['floor_hash_recv'])}), " if "floor" in row else "")
                      + f"tandem {fmt_s(row['tandem'])} ({total / MIB / row['tandem']:.0f} MiB/s, "
                      f"{ratio:.2f}x cp); connect {fmt_s(row['connect'])}, first file "
                      f"{fmt_s(row['first'])}; A indexed in {row['a_index']}; "
                      f"peak RSS A {fmt_bytes(row['hwm_a'])} B {fmt_bytes(row['hwm_b'])}; "
                      f"net per log {fmt_bytes(row['net'])}, reused {fmt_bytes(row['reused'])}; "
                      f"links up {row['links']}, failed fetches {row['retries']}; CPU during "
                      f"the sync A {row['cpu_a']:.2f}s B {row['cpu_b']:.2f}s (B by thread, "
                      f"user+sys: "
                      + ", ".join(f"{k} {u:.2f}+{sy:.2f}s" for k, (u, sy) in
                                  row["threads_b"].items())
                      + "); "
                      f"verify: {'OK' if row['ok'] else 'FAILED'} ({row['verify']})"
                      + (f"; idle CPU A {row['idle_a']:.2f}% B {row['idle_b']:.2f}%" if idle else ""),
                      flush=True)
        finally:
            self.stop_all()
        summary = {k: median([row.get(k) for row in rows])
                   for k in ("cp", "rsync", "tandem", "hwm_a", "hwm_b", "connect", "first",
                             "idle_a", "idle_b", "cp_nosync", "rsync_nosync", "load",
                             "floor", "floor_hash", "floor_hash_recv")}
        summary["ratio"] = median([row["tandem"] / row["cp"] for row in rows])
        summary["all_ok"] = all(row["ok"] for row in rows)
        print(f"  median of {len(rows)}: cp -a {fmt_s(summary['cp'])}, rsync -a "
              f"{fmt_s(summary['rsync'])}, tandem {fmt_s(summary['tandem'])} "
              f"({summary['ratio']:.2f}x cp -a), "
              + (f"transfer floor {fmt_s(summary['floor'])} (with BLAKE3 "
                 f"{fmt_s(summary['floor_hash'])}, on the receiver only "
                 f"{fmt_s(summary['floor_hash_recv'])}), " if summary.get("floor") else "")
              + f"peak RSS A {fmt_bytes(summary['hwm_a'])} "
              f"B {fmt_bytes(summary['hwm_b'])}"
              + (f", idle CPU A {summary['idle_a']:.2f}% B {summary['idle_b']:.2f}%"
                 if idle else ""), flush=True)
        summary["problems"] = self.log_problems(key)
        self.results[key] = {"files": nfiles, "bytes": total, "runs": rows, "median": summary}
        self.slow("remove this case's trees", rmtree, base)
        for r in range(1, runs + 1):
            rmtree(os.path.join(self.work, f"{key}-r{r}"))
        self.slow("sync", sync_disks)

    def tandem_initial(self, key, r, src, base, nfiles, idle, keep, wan=False):
        tag = f"{key}-r{r}"
        db = os.path.join(base, f"B-r{r}")
        rmtree(db)
        for s in ("state-A", "state-B"):
            rmtree(os.path.join(self.work, tag, s))
        self.slow("sync before", sync_disks)
        a, b = self.pair(tag, src, db, start_b=False, wan=wan)
        out = {}
        try:
            line = a.wait_line(r"\bindexed ", 1, "indexed")
            out["a_index"] = re.search(r" in (\S+):", line).group(1)
            os.makedirs(db, exist_ok=True)
            cpu_a0 = a.cpu_ticks()
            t0 = time.perf_counter()
            b.start()
            deadline = t0 + self.args.timeout
            t1 = None
            while time.perf_counter() < deadline:
                b.poll_log()
                if len(b.received) >= nfiles:
                    t1 = time.perf_counter()
                    break
                if not b.alive():
                    raise BenchError(f"node B exited; log {b.logpath}")
                time.sleep(0.005)
            if t1 is None:
                raise BenchError(f"{tag}: only {len(b.received)} of {nfiles} files reached B "
                                 f"within {self.args.timeout}s; log {b.logpath}")
            # Confirm on disk (all names with the right size); fall back to
            # polling the disk if the log ran ahead of it (it should not).
            want = {rel: st.st_size for rel, st in tree_files(src).items()}
            while True:
                have = tree_files(db)
                if all(rel in have and have[rel].st_size == sz for rel, sz in want.items()):
                    break
                if time.perf_counter() > deadline:
                    raise BenchError(f"{tag}: files logged as received are not all on disk")
                time.sleep(0.02)
                t1 = time.perf_counter()
            out["tandem"] = t1 - t0
            out["hwm_a"], out["hwm_b"] = a.status("VmHWM"), b.status("VmHWM")
            out["cpu_a"] = (a.cpu_ticks() - cpu_a0) / CLK_TCK
            out["cpu_b"] = b.cpu_ticks() / CLK_TCK
            out["threads_b"] = {k: (round(u, 2), round(sy, 2)) for k, (u, sy) in
                                sorted(b.thread_cpu().items(), key=lambda kv: -sum(kv[1]))
                                if u + sy > 0}
            conn = b.wait_line(r"peer A connected", 1, "connected")
            out["connect"] = log_ts(conn) - b.started_wall
            out["first"] = min(v[0] for v in b.received.values()) - b.started_wall
            out["net"] = sum(v[1] for v in b.received.values())
            out["reused"] = sum(v[2] for v in b.received.values())
            b.poll_log()
            out["links"] = sum("peer A connected" in l for l in b.log.lines)
            out["retries"] = sum("fetching " in l and " failed " in l for l in b.log.lines)
            if idle:
                ta0, tb0, w0 = a.cpu_ticks(), b.cpu_ticks(), time.perf_counter()
                time.sleep(self.args.idle)
                ta1, tb1, w1 = a.cpu_ticks(), b.cpu_ticks(), time.perf_counter()
                out["idle_a"] = (ta1 - ta0) / CLK_TCK / (w1 - w0) * 100
                out["idle_b"] = (tb1 - tb0) / CLK_TCK / (w1 - w0) * 100
            out["ok"], out["verify"] = self.slow("verify", compare_trees, src, db)
        finally:
            self.slow("stop nodes", self.stop_all)
        if wan:
            # B dialed A through the proxy: to the target = B->A
            out["wire_b_a"], out["wire_a_b"] = self.wan_bytes(b.proxy)
        if not keep:
            self.slow("rm B", rmtree, db)
            self.slow("rm state", rmtree, os.path.join(self.work, tag))
        return out

    # ------------------------------------------------------------ cases 8, 9 (WAN)

    def rsync_daemon(self, tag, root):
        """An rsync daemon on a free loopback port serving `root` as module
        `mod` (writable, as this user), behind its own WAN link; returns
        (the proxy, its port). Both live until stop_aux."""
        port = self.ports.get()
        conf = os.path.join(self.work, f"{tag}-rsyncd.conf")
        with open(conf, "w") as f:
            f.write(f"use chroot = no\n"
                    f"log file = {os.path.join(self.logs, f'rsyncd-{tag}.log')}\n"
                    f"[mod]\n"
                    f"    path = {root}\n"
                    f"    read only = no\n"
                    f"    uid = {os.getuid()}\n"
                    f"    gid = {os.getgid()}\n")
        d = Aux(self, f"rsync daemon {tag}",
                ["rsync", "--daemon", "--no-detach", f"--config={conf}", "--address=127.0.0.1",
                 f"--port={port}"],
                os.path.join(self.logs, f"rsyncd-{tag}.out")).start(case_scoped=True)
        d.wait_port(port, 30)
        return self.wan_proxy(f"{tag}-rsync", port, case_scoped=True)

    def case_wan_initial(self, key, title, nfiles, size, per_dir, runs):
        """nfiles x size into an empty peer over the WAN link: rsync -a to an
        rsync daemon through one proxy, then Tandem (B dials A through
        another), each run; wall time and ratio to the link's limit."""
        hline(title)
        total = nfiles * size
        need = (2 * runs + 1) * (total + nfiles * 4 * KIB) + 64 * MIB
        free = shutil.disk_usage(self.work).free
        if free < need:
            print(f"  SKIPPED: {fmt_bytes(free)} free in {self.work}, this case needs "
                  f"{fmt_bytes(need)}", flush=True)
            self.results[key] = {"skipped": f"{fmt_bytes(free)} free, need {fmt_bytes(need)}"}
            return
        base = os.path.join(self.work, key)
        src = os.path.join(base, "A")
        t0 = time.perf_counter()
        make_tree(src, nfiles, size, per_dir, seed=zlib.crc32(key.encode()))
        sync_disks()
        print(f"  made {nfiles} file(s) x {fmt_bytes(size)} = {fmt_bytes(total)} in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        rows = []
        try:
            rsync_proxy, rsync_port = (self.rsync_daemon(key, base) if self.have_rsync
                                       else (None, None))
            delay, rate = self.wan
            floor = self.wan_floor(total)
            print(f"  link: {delay * 1000:g} ms one way, {rate * 8 / 1e6:g} Mbit/s each way; "
                  f"limit = {fmt_bytes(total)} / bandwidth + one round trip = {fmt_s(floor)}",
                  flush=True)
            for r in range(1, runs + 1):
                row = {"run": r, "load": os.getloadavg()[0], "psi_cpu": psi("cpu")}
                if rsync_port:
                    dst = f"rsync-r{r}"
                    rmtree(os.path.join(base, dst))
                    row["rsync"], row["rsync_nosync"] = self.time_copy(
                        ["rsync", "-a", src + "/", f"rsync://127.0.0.1:{rsync_port}/mod/{dst}/"],
                        os.path.join(base, dst), keep=True)
                    row["rsync_ok"], row["rsync_verify"] = compare_trees(src, os.path.join(base, dst))
                    # one connection per run: client -> daemon is "to the target"
                    row["rsync_wire_up"], row["rsync_wire_down"] = self.wan_bytes(rsync_proxy, r)
                row.update(self.tandem_initial(key, r, src, base, nfiles, False, True, wan=True))
                row["floor"] = floor
                rows.append(row)
                print(f"  run {r} (load {row['load']:.1f}, CPU pressure {row['psi_cpu']}): "
                      + (f"rsync -a {fmt_s(row['rsync'])} ({row['rsync'] / floor:.2f}x the "
                         f"limit; without the sync {fmt_s(row['rsync_nosync'])}; on the link "
                         f"{fmt_bytes(row['rsync_wire_up'])} out, "
                         f"{fmt_bytes(row['rsync_wire_down'])} back; "
                         f"{'OK' if row['rsync_ok'] else 'FAILED: ' + row['rsync_verify']}), "
                         if rsync_port else "")
                      + f"tandem {fmt_s(row['tandem'])} ({row['tandem'] / floor:.2f}x the limit, "
                      f"{total / MIB / row['tandem']:.1f} MiB/s; on the link A->B "
                      f"{fmt_bytes(row['wire_a_b'])}, B->A {fmt_bytes(row['wire_b_a'])}); "
                      f"connect {fmt_s(row['connect'])}, "
                      f"first file {fmt_s(row['first'])}; links up {row['links']}, failed "
                      f"fetches {row['retries']}; CPU during the sync A {row['cpu_a']:.2f}s "
                      f"B {row['cpu_b']:.2f}s; verify: {'OK' if row['ok'] else 'FAILED'} "
                      f"({row['verify']})", flush=True)
        finally:
            self.stop_all()
            self.stop_aux()
        summary = {k: median([row.get(k) for row in rows])
                   for k in ("rsync", "tandem", "connect", "first", "rsync_nosync", "load",
                             "wire_a_b", "wire_b_a", "rsync_wire_up", "rsync_wire_down")}
        summary["floor"] = floor if rows else None
        summary["ratio"] = median([row["tandem"] / row["floor"] for row in rows])
        summary["rsync_ratio"] = median([row["rsync"] / row["floor"] for row in rows
                                         if "rsync" in row])
        summary["all_ok"] = all(row["ok"] for row in rows)
        summary["rsync_all_ok"] = all(row.get("rsync_ok", True) for row in rows)
        print(f"  median of {len(rows)}: limit {fmt_s(summary['floor'])}, rsync -a "
              f"{fmt_s(summary['rsync'])}"
              + (f" ({summary['rsync_ratio']:.2f}x)" if summary["rsync_ratio"] else "")
              + f", tandem {fmt_s(summary['tandem'])} ({summary['ratio']:.2f}x; median of "
              f"per-run ratios)", flush=True)
        summary["problems"] = self.log_problems(key)
        self.results[key] = {"files": nfiles, "bytes": total, "link": {"delay": self.wan[0],
                             "rate": self.wan[1]}, "runs": rows, "median": summary}
        self.slow("remove this case's trees", rmtree, base)
        for r in range(1, runs + 1):
            rmtree(os.path.join(self.work, f"{key}-r{r}"))
        self.slow("sync", sync_disks)

    # ------------------------------------------------------------ cases 4, 5

    def synced_pair(self, key, fname, size):
        base = os.path.join(self.work, key)
        da, db = os.path.join(base, "A"), os.path.join(base, "B")
        os.makedirs(da)
        os.makedirs(db)
        write_random(os.path.join(da, fname), size, random.Random(size))
        sync_disks()
        a, b = self.pair(key, da, db, steady=True)
        self.wait_received(b, fname, self.args.timeout)
        if not same_file(os.path.join(da, fname), os.path.join(db, fname)):
            raise BenchError(f"{key}: initial copy of {fname} differs")
        time.sleep(self.args.settle)
        print(f"  set up: {fmt_bytes(size)} file synced A -> B", flush=True)
        return base, da, db, a, b

    def report_bytes(self, label, rows, key):
        res = {
            "time": median([x["time"] for x in rows]),
            "ss_total": median([x["ss_a"] + x["ss_b"] for x in rows]),
            "ss_a": median([x["ss_a"] for x in rows]),
            "ss_b": median([x["ss_b"] for x in rows]),
            "log_net": median([x["log_net"] for x in rows]),
            "all_ok": all(x["ok"] for x in rows),
        }
        print(f"  median of {len(rows)}: {label} {fmt_s(res['time'])}; TCP payload "
              f"{fmt_bytes(res['ss_total'])} (A->B {fmt_bytes(res['ss_a'])}, B->A "
              f"{fmt_bytes(res['ss_b'])}); B's log: {fmt_bytes(res['log_net'])} over the network",
              flush=True)
        res["problems"] = self.log_problems(key)
        self.results[key] = {"runs": rows, "median": res}

    def case_edit(self):
        hline("case 4: 4 KiB changed inside a 256 MiB file")
        size, off = 256 * MIB, 128 * MIB + 1000
        need = 3 * size
        if shutil.disk_usage(self.work).free < need:
            print("  SKIPPED: not enough space")
            self.results["edit"] = {"skipped": "disk"}
            return
        rows = []
        base = None
        try:
            base, da, db, a, b = self.synced_pair("edit", "big.bin", size)
            fa, fb = os.path.join(da, "big.bin"), os.path.join(db, "big.bin")
            rng = random.Random(4)
            for r in range(1, self.args.runs + 1):
                before = ss_links([a.port, b.port])
                st0 = os.stat(fb)
                n_recv = sum("received big.bin" in l for l in b.log.lines)
                t0 = time.perf_counter()
                with open(fa, "r+b") as f:
                    f.seek(off)
                    f.write(rng.randbytes(4096))
                deadline = t0 + self.args.timeout
                t1 = None
                while time.perf_counter() < deadline:
                    st = os.stat(fb)
                    if (st.st_ino, st.st_mtime_ns) != (st0.st_ino, st0.st_mtime_ns):
                        t1 = time.perf_counter()
                        if same_file(fa, fb):
                            break
                        st0 = st  # changed but not yet identical: keep waiting
                        t1 = None
                    time.sleep(0.001)
                if t1 is None:
                    raise BenchError(f"edit run {r}: B's copy never became identical within "
                                     f"{self.args.timeout}s")
                # B's log line for it, then let the link go quiet before reading counters
                deadline = time.monotonic() + 10
                while sum("received big.bin" in l for l in b.log.lines) <= n_recv \
                        and time.monotonic() < deadline:
                    b.poll_log()
                    time.sleep(0.005)
                time.sleep(self.args.settle)
                after = ss_links([a.port, b.port])
                sa, sb, notes = ss_delta(before, after, a, b)
                line = [l for l in b.log.lines if "received big.bin" in l][-1]
                m = RECEIVED.search(line)
                row = {"run": r, "time": t1 - t0, "ss_a": sa, "ss_b": sb,
                       "log_net": parse_size(m["net"]), "log_reused": parse_size(m["reused"]),
                       "log_took": m["took"], "ok": same_file(fa, fb), "notes": notes}
                # The floor of any install that replaces the file atomically
                # on this disk: a full copy of it, made durable (outside the
                # nodes' folders, on the same file system).
                floor_path = os.path.join(base, "floor.bin")
                c0 = time.perf_counter()
                shutil.copyfile(fb, floor_path)
                with open(floor_path, "rb") as f:
                    os.fsync(f.fileno())
                row["floor"] = time.perf_counter() - c0
                os.unlink(floor_path)
                rows.append(row)
                print(f"  run {r}: identical on B after {fmt_s(row['time'])}; TCP payload "
                      f"A->B {fmt_bytes(sa)}, B->A {fmt_bytes(sb)}, total {fmt_bytes(sa + sb)}; "
                      f"B's log: {m['net']} over the network, {m['reused']} reused, transfer "
                      f"{m['took']}; a copy of the file + fsync {fmt_s(row['floor'])}"
                      + (f"; {'; '.join(notes)}" if notes else ""), flush=True)
        finally:
            self.stop_all()
        if rows:
            print(f"  median copy of the file + fsync (the floor of an atomic install): "
                  f"{fmt_s(statistics.median(x['floor'] for x in rows))}", flush=True)
        self.report_bytes("identical on B after", rows, "edit")
        if base:
            rmtree(base)

    def case_rename(self):
        hline("case 5: a 100 MiB file renamed")
        size = 100 * MIB
        rows = []
        base = None
        try:
            base, da, db, a, b = self.synced_pair("rename", "r0.bin", size)
            for r in range(1, self.args.runs + 1):
                old, new = f"r{r - 1}.bin", f"r{r}.bin"
                before = ss_links([a.port, b.port])
                n_lines = len(b.log.lines)
                t0 = time.perf_counter()
                os.rename(os.path.join(da, old), os.path.join(da, new))
                deadline = t0 + self.args.timeout
                t1 = t_new = None
                while time.perf_counter() < deadline:
                    try:
                        has_new = os.stat(os.path.join(db, new)).st_size == size
                    except FileNotFoundError:
                        has_new = False
                    if has_new and t_new is None:
                        t_new = time.perf_counter()
                    if has_new and not os.path.exists(os.path.join(db, old)):
                        t1 = time.perf_counter()
                        break
                    time.sleep(0.001)
                if t1 is None:
                    raise BenchError(f"rename run {r}: B did not show {new} without {old} within "
                                     f"{self.args.timeout}s")
                time.sleep(self.args.settle)
                b.poll_log()
                after = ss_links([a.port, b.port])
                sa, sb, notes = ss_delta(before, after, a, b)
                net = reused = None
                for l in b.log.lines[n_lines:]:
                    m = RECEIVED.search(l)
                    if m and m["path"] == new:
                        net, reused = parse_size(m["net"]), parse_size(m["reused"])
                how = "; ".join(l.split("tandem_node::core: ", 1)[-1]
                                for l in b.log.lines[n_lines:] if "tandem_node::core" in l)
                row = {"run": r, "time": t1 - t0, "new_at": t_new - t0, "ss_a": sa, "ss_b": sb,
                       "log_net": net, "log_reused": reused,
                       "ok": same_file(os.path.join(da, new), os.path.join(db, new)),
                       "notes": notes, "b_log": how}
                rows.append(row)
                print(f"  run {r}: B has {new} and not {old} after {fmt_s(row['time'])} (new name "
                      f"at {fmt_s(row['new_at'])}); TCP payload A->B {fmt_bytes(sa)}, B->A "
                      f"{fmt_bytes(sb)}, total {fmt_bytes(sa + sb)}; content "
                      f"{'OK' if row['ok'] else 'DIFFERS'}; B's log: {how}"
                      + (f"; {'; '.join(notes)}" if notes else ""), flush=True)
        finally:
            self.stop_all()
        self.report_bytes("new name only on B after", rows, "rename")
        if base:
            rmtree(base)

    # ------------------------------------------------------------ summary

    def summary(self):
        R = self.results
        hline("summary (medians)")
        head = ["| work | cp -a | rsync -a | Tandem | target |", "|---|---|---|---|---|"]
        lines = list(head)
        lat = R.get("latency")
        if lat:
            for mode, what in (("mv", "mv into A's dir"), ("write", "written in place")):
                x = lat[mode]
                lines.append(f"| new 4 KiB file reaches the peer ({what}): median / p99 of "
                             f"{x['samples']} | — | — | {fmt_s(x['median'])} / {fmt_s(x['p99'])}"
                             + (f", {x['timeouts']} timeouts" if x["timeouts"] else "")
                             + " | < 50 ms / < 250 ms |")
        for key, label, target in (
                ("1gib", "1 GiB as 256 × 4 MiB into an empty peer", "≤ 2× cp -a"),
                ("20k", "20,000 × 4 KiB in 200 folders into an empty peer", "< 3× cp -a"),
                ("1m", "1,000,000 × 2 KiB in 1,000 folders into an empty peer",
                 "≤ 1.3× cp -a + sync, ≤ 300 MB each")):
            x = R.get(key)
            if not x:
                continue
            if "skipped" in x:
                lines.append(f"| {label} | skipped: {x['skipped']} | | | {target} |")
                continue
            m = x["median"]
            lines.append(
                f"| {label} | {fmt_s(m['cp'])} | {fmt_s(m['rsync'])} | {fmt_s(m['tandem'])} "
                f"({m['ratio']:.2f}× cp, median of per-run ratios), peak RSS A {fmt_bytes(m['hwm_a'])} + B "
                f"{fmt_bytes(m['hwm_b'])}"
                + (f"; transfer floor {fmt_s(m['floor'])}, with BLAKE3 on both ends "
                   f"{fmt_s(m['floor_hash'])}, on the receiver only "
                   f"{fmt_s(m['floor_hash_recv'])}" if m.get("floor") else "")
                + ("" if m["all_ok"] else ", CONTENT MISMATCH") + f" | {target} |")
            if key == "20k" and m.get("idle_a") is not None:
                lines.append(f"| idle with 20,000 files: CPU over {self.args.idle:.0f} s | — | — | "
                             f"A {m['idle_a']:.2f} %, B {m['idle_b']:.2f} % | (Syncthing 0.2–2.9 %) |")
        for key, label, target in (
                ("edit", "4 KiB changed inside a 256 MiB file", "well under 1 MiB"),
                ("rename", "100 MiB file renamed", "(Syncthing 38 KiB, Unison 3.9 KiB)")):
            x = R.get(key)
            if not x or "skipped" in x:
                continue
            m = x["median"]
            lines.append(f"| {label}: bytes sent (TCP payload, both ways) / time | — | — | "
                         f"{fmt_bytes(m['ss_total'])} (log: {fmt_bytes(m['log_net'])} over the "
                         f"network) / {fmt_s(m['time'])}"
                         + ("" if m["all_ok"] else ", CONTENT MISMATCH") + f" | {target} |")
        if lines == head:
            lines = []
        wan = [k for k in ("wan_latency", "wan_2k", "wan_64m") if R.get(k)]
        if wan:
            delay, rate = self.wan
            lines += ["", f"over the WAN link ({delay * 1000:g} ms one way, "
                      f"{rate * 8 / 1e6:g} Mbit/s each way; B dials A through it):", "",
                      "| work | limit | rsync -a | Tandem |", "|---|---|---|---|"]
        lat = R.get("wan_latency")
        if lat:
            for mode, what in (("mv", "mv into A's dir"), ("write", "written in place")):
                x = lat[mode]
                lines.append(f"| new 4 KiB file reaches the peer ({what}): median / p90 of "
                             f"{x['samples']} | {fmt_s(lat['link']['delay'])} (one crossing) | — | "
                             f"{fmt_s(x['median'])} / {fmt_s(x['p90'])}"
                             + (f", {x['timeouts']} timeouts" if x["timeouts"] else "") + " |")
        for key, label in (("wan_2k", "2,000 × 4 KiB into an empty peer"),
                           ("wan_64m", "one 64 MiB file into an empty peer")):
            x = R.get(key)
            if not x:
                continue
            if "skipped" in x:
                lines.append(f"| {label} | skipped: {x['skipped']} | | |")
                continue
            m = x["median"]
            lines.append(
                f"| {label} | {fmt_s(m['floor'])} | "
                + (f"{fmt_s(m['rsync'])} ({m['rsync_ratio']:.2f}×)" if m["rsync"] else "—")
                + ("" if m["rsync_all_ok"] else ", CONTENT MISMATCH")
                + f" | {fmt_s(m['tandem'])} ({m['ratio']:.2f}×)"
                + ("" if m["all_ok"] else ", CONTENT MISMATCH") + " |")
        print("\n".join(lines), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--cases", default="1 2 3 4 5")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--runs-big", type=int, default=3)
    ap.add_argument("--runs-huge", type=int, default=1)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--gap", type=float, default=0.1)
    ap.add_argument("--sample-timeout", type=float, default=10)
    ap.add_argument("--idle", type=float, default=20)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json")
    ap.add_argument("--dial", choices=("both", "b"), default="both")
    ap.add_argument("--wan-link", help="the wan_link proxy (node/examples/wan_link.rs), cases 7-9")
    ap.add_argument("--transfer-floor",
                    help="node/examples/transfer_floor.rs, timed in case 2 when it exists")
    ap.add_argument("--wan-delay", default="25ms")
    ap.add_argument("--wan-rate", default="100mbit")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(args)
    cases = set(args.cases.replace(",", " ").split())
    if "wan" in cases:
        cases |= {"7", "8", "9"}
    if cases & {"7", "8", "9"}:
        if not args.wan_link:
            raise SystemExit("cases 7-9 need --wan-link")
        bench.wan_probe()
    rc = 0
    try:
        steps = [
            ("1", bench.case_latency),
            ("2", lambda: bench.case_initial("1gib", "case 2: 1 GiB as 256 x 4 MiB into an empty peer",
                                             256, 4 * MIB, 0, args.runs_big, 3 * GIB)),
            ("3", lambda: bench.case_initial(
                "20k", "case 3 (+6): 20,000 x 4 KiB in 200 folders into an empty peer, then idle CPU",
                20000, 4 * KIB, 100, args.runs, 1 * GIB, idle=args.idle > 0)),
            ("10", lambda: bench.case_initial(
                "1m", "case 10: 1,000,000 x 2 KiB in 1,000 folders into an empty peer",
                1_000_000, 2 * KIB, 1000, args.runs_huge, 8 * GIB)),
            ("4", bench.case_edit),
            ("5", bench.case_rename),
            ("7", lambda: bench.case_latency(
                "wan_latency", "wlat", "case 7: a new 4 KiB file A -> B over the WAN link",
                wan=True)),
            ("8", lambda: bench.case_wan_initial(
                "wan_2k", "case 8: 2,000 x 4 KiB in 20 folders into an empty peer over the WAN link",
                2000, 4 * KIB, 100, args.runs)),
            ("9", lambda: bench.case_wan_initial(
                "wan_64m", "case 9: one 64 MiB file into an empty peer over the WAN link",
                1, 64 * MIB, 0, args.runs)),
        ]
        for num, fn in steps:
            if num not in cases:
                continue
            try:
                fn()
            except BenchError as e:
                rc = 1
                print(f"  FAILED: {e}", flush=True)
                bench.stop_all()
        bench.summary()
    finally:
        bench.stop_all()
        bench.stop_aux()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(bench.results, f, indent=1, default=str)
    return rc


if __name__ == "__main__":
    sys.exit(main())
