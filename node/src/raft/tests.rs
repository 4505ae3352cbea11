//! Cluster tests: real Raft instances with their SQLite stores, talking over
//! the in-process transport. Every wait has a deadline; nothing sleeps to
//! synchronise.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tandem_common::{NodeId, RelPath};
use tempfile::TempDir;
use tokio::time::Instant;
use uuid::Uuid;

use super::memnet::MemNet;
use super::*;

/// Generous bound for anything that should happen "soon" on a loaded
/// 2-core machine running debug builds.
const SOON: Duration = Duration::from_secs(20);

fn test_settings() -> RaftSettings {
    RaftSettings {
        heartbeat: Duration::from_millis(100),
        election_min: Duration::from_millis(500),
        election_max: Duration::from_millis(1000),
        backoff: Duration::from_millis(200),
        ..RaftSettings::default()
    }
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

struct Cluster {
    net: Arc<MemNet>,
    dirs: Vec<TempDir>,
    ids: Vec<NodeId>,
    nodes: Vec<Option<RaftLocks>>,
    settings: RaftSettings,
}

impl Cluster {
    async fn start(settings: RaftSettings) -> Cluster {
        let net = MemNet::new();
        let ids: Vec<NodeId> = (1..=3).map(|i| NodeId(Uuid::from_u128(i))).collect();
        // (A fourth node can be added later: `add_node`.)
        let mut c = Cluster {
            net,
            dirs: (0..3).map(|_| tempfile::tempdir().unwrap()).collect(),
            ids,
            nodes: vec![None, None, None],
            settings,
        };
        for i in 0..3 {
            c.boot(i).await;
        }
        let members: BTreeMap<NodeId, String> = c
            .ids
            .iter()
            .zip(NAMES)
            .take(3)
            .map(|(id, n)| (*id, n.to_string()))
            .collect();
        assert!(c.node(0).initialize(members.clone()).await.unwrap());
        // A second initialize is harmless.
        assert!(!c.node(0).initialize(members).await.unwrap());
        c
    }

    /// Starts node `i` from its state folder and makes it reachable.
    async fn boot(&mut self, i: usize) -> RaftLocks {
        let locks = RaftLocks::start(
            self.ids[i],
            self.dirs[i].path(),
            self.net.transport(MemberId(self.ids[i])),
            self.settings.clone(),
        )
        .await
        .unwrap();
        self.net.attach(locks.clone());
        self.nodes[i] = Some(locks.clone());
        locks
    }

    /// Stops node `i` (its Raft instance and store are dropped).
    async fn stop(&mut self, i: usize) {
        self.net.detach(self.mid(i));
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
    }

    fn node(&self, i: usize) -> &RaftLocks {
        self.nodes[i].as_ref().expect("node is running")
    }

    fn mid(&self, i: usize) -> MemberId {
        MemberId(self.ids[i])
    }

    fn index_of(&self, id: MemberId) -> usize {
        self.ids.iter().position(|x| MemberId(*x) == id).unwrap()
    }

    /// Waits until a leader is known to every node in `among` and it is
    /// one of them; answers its index.
    async fn leader_among(&self, among: &[usize]) -> usize {
        let deadline = Instant::now() + SOON;
        loop {
            let views: Vec<Option<MemberId>> = among
                .iter()
                .map(|i| self.node(*i).metrics().borrow().current_leader)
                .collect();
            if let Some(Some(l)) = views.first()
                && views.iter().all(|v| *v == Some(*l))
            {
                let li = self.index_of(*l);
                if among.contains(&li)
                    && self.node(li).metrics().borrow().state == ServerState::Leader
                {
                    return li;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader among {among:?}: {views:?}"
            );
            self.changed(among).await;
        }
    }

    /// Returns when any of `among` reports new metrics (bounded).
    async fn changed(&self, among: &[usize]) {
        let mut rxs: Vec<_> = among.iter().map(|i| self.node(*i).metrics()).collect();
        let futs = rxs.iter_mut().map(|rx| Box::pin(rx.changed()));
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            futures::future::select_all(futs),
        )
        .await;
    }

    /// Waits until every node in `among` has applied what any of them (and
    /// `from`) applied, then answers their (equal) tables. (The applied
    /// table itself is the reference: metrics are reported a little later.)
    async fn converged(&self, from: usize, among: &[usize]) -> BTreeMap<RelPath, PathLock> {
        let target = among
            .iter()
            .chain([&from])
            .filter_map(|i| self.node(*i).view().applied().unwrap())
            .map(|l| l.index)
            .max();
        for i in among {
            self.node(*i)
                .raft()
                .wait(Some(SOON))
                .applied_index_at_least(target, "catch up")
                .await
                .unwrap_or_else(|e| panic!("node {} did not catch up: {e}", NAMES[*i]));
        }
        let tables: Vec<_> = among
            .iter()
            .map(|i| self.node(*i).view().locks().unwrap())
            .collect();
        for t in &tables[1..] {
            assert_eq!(t, &tables[0], "members disagree");
        }
        tables[0].clone()
    }

    /// Starts a fresh node (not a member yet) and answers its index.
    async fn add_node(&mut self) -> usize {
        let i = self.ids.len();
        self.ids.push(NodeId(Uuid::from_u128(i as u128 + 1)));
        self.dirs.push(tempfile::tempdir().unwrap());
        self.nodes.push(None);
        self.boot(i).await;
        i
    }

    async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
        self.net.clear();
    }
}

fn path(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn claim(owner: u128, via: NodeId) -> Claim {
    Claim {
        owner: Uuid::from_u128(owner),
        owner_name: format!("user{owner}"),
        via,
        at_ns: 1,
    }
}

fn lock(p: &str, c: &Claim) -> LockCommand {
    LockCommand::Lock {
        path: path(p),
        claim: c.clone(),
    }
}

fn unlock(p: &str, by: u128, force: bool) -> LockCommand {
    LockCommand::Unlock {
        path: path(p),
        by: Uuid::from_u128(by),
        force,
        at_ns: 2,
    }
}

fn others(i: usize) -> Vec<usize> {
    (0..3).filter(|x| *x != i).collect()
}

/// Submits `cmd` on `node`, expects a refusal within the 5 s the issue
/// allows, and answers it.
async fn refused_in_time(node: &RaftLocks, cmd: LockCommand) -> SubmitError {
    let started = Instant::now();
    let res = node.submit(cmd).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "answer took {took:?}: {res:?}"
    );
    res.expect_err("the command must not be granted")
}

/// What a member alone says when the other two are out of reach.
fn alone_message(lone: usize) -> String {
    let down: Vec<&str> = others(lone).iter().map(|i| NAMES[*i]).collect();
    format!(
        "only 1 of 3 nodes reachable ({}, {} down); a majority (2) is needed",
        down[0], down[1]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_a_leader_and_commit_locks_submitted_anywhere() {
    let c = Cluster::start(test_settings()).await;
    let leader = c.leader_among(&[0, 1, 2]).await;
    for i in 0..3 {
        let cl = claim(i as u128 + 1, c.ids[i]);
        let p = format!("f{i}");
        let out = c.node(i).submit(lock(&p, &cl)).await.unwrap();
        assert_eq!(out, LockOutcome::Granted(cl.clone()));
        // The member asked shows it at once, leader or not.
        let here = c.node(i).view().get(&path(&p)).unwrap();
        assert_eq!(here.map(|l| l.holder), Some(cl));
    }
    // Only the owner unlocks, unless forced; from any member.
    let f = others(leader)[0];
    let out = c.node(f).submit(unlock("f0", 9, false)).await.unwrap();
    assert!(matches!(out, LockOutcome::NotOwner { .. }), "{out:?}");
    let out = c.node(f).submit(unlock("f0", 9, true)).await.unwrap();
    assert!(
        matches!(out, LockOutcome::Released { next: None, .. }),
        "{out:?}"
    );
    let table = c.converged(leader, &[0, 1, 2]).await;
    let held: Vec<&str> = table.keys().map(|p| p.as_str()).collect();
    assert_eq!(held, vec!["f1", "f2"]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_locks_from_two_members_have_exactly_one_winner() {
    let c = Cluster::start(test_settings()).await;
    let leader = c.leader_among(&[0, 1, 2]).await;
    for round in 0..20 {
        let (i, j) = (round % 3, (round + 1) % 3);
        let p = format!("race{round}");
        let (ca, cb) = (claim(100, c.ids[i]), claim(200, c.ids[j]));
        let (ra, rb) = tokio::join!(
            c.node(i).submit(lock(&p, &ca)),
            c.node(j).submit(lock(&p, &cb))
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let winner = match (&ra, &rb) {
            (LockOutcome::Granted(w), LockOutcome::Refused { holder }) if *holder == ca => {
                w.clone()
            }
            (LockOutcome::Refused { holder }, LockOutcome::Granted(w)) if *holder == cb => {
                w.clone()
            }
            _ => panic!("round {round}: not exactly one winner: {ra:?} / {rb:?}"),
        };
        let table = c.converged(leader, &[0, 1, 2]).await;
        assert_eq!(table[&path(&p)].holder, winner, "round {round}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_granted_in_order_as_each_unlocks() {
    let c = Cluster::start(test_settings()).await;
    c.leader_among(&[0, 1, 2]).await;
    let claims: Vec<Claim> = (0..3).map(|i| claim(i as u128 + 1, c.ids[i])).collect();
    let first = c
        .node(0)
        .submit(LockCommand::Wait {
            path: path("doc"),
            claim: claims[0].clone(),
        })
        .await
        .unwrap();
    assert_eq!(first, LockOutcome::Granted(claims[0].clone()));
    for (n, i) in [1usize, 2].into_iter().enumerate() {
        let out = c
            .node(i)
            .submit(LockCommand::Wait {
                path: path("doc"),
                claim: claims[i].clone(),
            })
            .await
            .unwrap();
        assert_eq!(
            out,
            LockOutcome::Queued {
                holder: claims[0].clone(),
                position: n + 1
            }
        );
    }
    for i in 0..3 {
        let out = c
            .node(i)
            .submit(unlock("doc", i as u128 + 1, false))
            .await
            .unwrap();
        let LockOutcome::Released { released, next } = out else {
            panic!("{out:?}");
        };
        assert_eq!(released.owner, claims[i].owner);
        assert_eq!(next.map(|n| n.owner), claims.get(i + 1).map(|c| c.owner));
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_is_refused_quickly_and_the_majority_still_commits() {
    let c = Cluster::start(test_settings()).await;
    let leader = c.leader_among(&[0, 1, 2]).await;
    let lone = others(leader)[1];
    let peer = others(leader)[0];
    c.net.isolate(c.mid(lone));

    let cl = claim(1, c.ids[peer]);
    assert_eq!(
        c.node(peer).submit(lock("x", &cl)).await.unwrap(),
        LockOutcome::Granted(cl)
    );

    let err = refused_in_time(c.node(lone), lock("y", &claim(2, c.ids[lone]))).await;
    let SubmitError::NoMajority(q) = &err else {
        panic!("expected no majority, got {err:?}");
    };
    assert_eq!(err.to_string(), alone_message(lone));
    assert_eq!(q.reachable, vec![NAMES[lone].to_string()]);

    c.net.heal();
    let table = c.converged(leader, &[0, 1, 2]).await;
    assert!(table.contains_key(&path("x")));
    assert!(!table.contains_key(&path("y")));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_is_refused_and_the_others_elect_a_new_one() {
    let c = Cluster::start(test_settings()).await;
    let old = c.leader_among(&[0, 1, 2]).await;
    c.net.isolate(c.mid(old));
    let rest = others(old);
    let new = c.leader_among(&rest).await;
    assert_ne!(new, old);

    let cl = claim(1, c.ids[rest[0]]);
    assert_eq!(
        c.node(rest[0]).submit(lock("x", &cl)).await.unwrap(),
        LockOutcome::Granted(cl)
    );

    // The old leader still believes it leads; it must not hang or grant.
    let err = refused_in_time(c.node(old), lock("x", &claim(2, c.ids[old]))).await;
    assert!(matches!(err, SubmitError::NoMajority(_)), "{err:?}");
    assert_eq!(err.to_string(), alone_message(old));

    c.net.heal();
    let table = c.converged(new, &[0, 1, 2]).await;
    assert_eq!(table[&path("x")].holder.owner, Uuid::from_u128(1));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_keeps_its_log_and_state_and_catches_up() {
    let mut c = Cluster::start(test_settings()).await;
    let leader = c.leader_among(&[0, 1, 2]).await;
    let f = others(leader)[0];
    for n in 0..3 {
        let cl = claim(n + 1, c.ids[leader]);
        c.node(leader)
            .submit(lock(&format!("before{n}"), &cl))
            .await
            .unwrap();
    }
    let before = c.converged(leader, &[0, 1, 2]).await;
    let (term, last_log) = {
        let m = c.node(f).metrics().borrow().clone();
        (m.current_term, m.last_log_index)
    };
    c.stop(f).await;

    // Two of three still commit.
    for n in 0..2 {
        let cl = claim(n + 10, c.ids[leader]);
        let out = c
            .node(leader)
            .submit(lock(&format!("after{n}"), &cl))
            .await
            .unwrap();
        assert_eq!(out, LockOutcome::Granted(cl));
    }

    // Reopened from its files, before hearing from anyone, it has what it had.
    c.net.isolate(c.mid(f));
    let back = c.boot(f).await;
    assert_eq!(back.view().locks().unwrap(), before);
    // (The first metrics report comes once the core has loaded its state.)
    let m = back
        .raft()
        .wait(Some(SOON))
        .metrics(|m| m.last_log_index.is_some(), "state loaded")
        .await
        .unwrap();
    assert!(
        m.current_term >= term,
        "vote lost: {} < {term}",
        m.current_term
    );
    assert!(m.last_log_index >= last_log, "log lost");

    c.net.heal();
    let table = c.converged(leader, &[0, 1, 2]).await;
    assert_eq!(table.len(), 5);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_member_is_brought_up_to_date_with_a_snapshot() {
    let settings = RaftSettings {
        snapshot_every: 10,
        keep_after_snapshot: 0,
        ..test_settings()
    };
    let c = Cluster::start(settings).await;
    let leader = c.leader_among(&[0, 1, 2]).await;
    let lag = others(leader)[0];
    let lag_log = c.node(lag).metrics().borrow().last_log_index;
    c.net.isolate(c.mid(lag));

    for n in 0..30u128 {
        let cl = claim(n + 1, c.ids[leader]);
        c.node(leader)
            .submit(lock(&format!("p{n}"), &cl))
            .await
            .unwrap();
    }
    // The leader compacted past what the lagging member has.
    let m = c
        .node(leader)
        .raft()
        .wait(Some(SOON))
        .metrics(
            |m| m.purged.map(|p| p.index) > lag_log && m.snapshot.is_some(),
            "snapshot and purge",
        )
        .await
        .unwrap();
    assert!(m.purged.is_some());

    c.net.heal();
    let table = c.converged(leader, &[0, 1, 2]).await;
    assert_eq!(table.len(), 30);
    let got = c.node(lag).metrics().borrow().snapshot;
    assert!(got.is_some(), "the lagging member installed no snapshot");
    let stored = c.node(lag).raft().get_snapshot().await.unwrap();
    assert!(stored.is_some(), "the installed snapshot is not kept");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_in_the_middle_of_a_grant_never_answers_granted() {
    let settings = RaftSettings {
        answer_within: Duration::from_millis(2000),
        ..test_settings()
    };
    let c = Cluster::start(settings).await;
    let old = c.leader_among(&[0, 1, 2]).await;
    // Cut off just before the command: the leader still has a fresh
    // majority, appends it, and can never commit it.
    c.net.isolate(c.mid(old));
    let err = refused_in_time(c.node(old), lock("x", &claim(1, c.ids[old]))).await;
    assert!(
        matches!(
            err,
            SubmitError::Unknown { .. } | SubmitError::NoMajority(_)
        ),
        "{err:?}"
    );

    // The others take the same path for someone else.
    let rest = others(old);
    let new = c.leader_among(&rest).await;
    let theirs = claim(2, c.ids[rest[0]]);
    assert_eq!(
        c.node(rest[0]).submit(lock("x", &theirs)).await.unwrap(),
        LockOutcome::Granted(theirs.clone())
    );

    // Back together, everyone agrees on the one holder.
    c.net.heal();
    let table = c.converged(new, &[0, 1, 2]).await;
    assert_eq!(table[&path("x")].holder, theirs);
    c.shutdown().await;
}

/// A leader whose last command a majority acknowledged a moment ago, then
/// cut off, does not take that acknowledgement for a majority now (its
/// links say the others are gone): the next command is refused naming who
/// is down, not left to time out as "unknown".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_right_after_a_commit_is_refused_not_unknown() {
    let c = Cluster::start(test_settings()).await;
    c.net.know_links();
    let leader = c.leader_among(&[0, 1, 2]).await;
    let cl = claim(1, c.ids[leader]);
    let granted = c.node(leader).submit(lock("x", &cl)).await.unwrap();
    assert_eq!(granted, LockOutcome::Granted(cl));
    c.net.isolate(c.mid(leader));
    let err = refused_in_time(c.node(leader), lock("y", &claim(2, c.ids[leader]))).await;
    assert!(matches!(err, SubmitError::NoMajority(_)), "{err:?}");
    assert_eq!(err.to_string(), alone_message(leader));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_three_stopped_the_last_one_refuses_naming_both() {
    let mut c = Cluster::start(test_settings()).await;
    let leader = c.leader_among(&[0, 1, 2]).await;
    let last = others(leader)[0];
    for i in others(last) {
        c.stop(i).await;
    }
    let err = refused_in_time(c.node(last), lock("x", &claim(1, c.ids[last]))).await;
    assert_eq!(err.to_string(), alone_message(last));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_gone_for_good_is_removed_and_a_new_one_added_by_commands() {
    let mut c = Cluster::start(test_settings()).await;
    let leader = c.leader_among(&[0, 1, 2]).await;
    let (stay, gone) = (others(leader)[0], others(leader)[1]);
    c.stop(gone).await;
    c.node(leader).remove_member(c.ids[gone]).await.unwrap();
    // Membership changes are made on the leader only.
    let refused = c.node(stay).remove_member(c.ids[leader]).await;
    assert!(
        matches!(refused, Err(RaftLocksError::NotLeader { leader: Some(l) }) if l == c.mid(leader)),
        "{refused:?}"
    );

    let new = c.add_node().await;
    c.node(leader)
        .add_member(c.ids[new], NAMES[new].into())
        .await
        .unwrap();
    let want: BTreeSet<MemberId> = [leader, stay, new].iter().map(|i| c.mid(*i)).collect();
    c.node(new)
        .raft()
        .wait(Some(SOON))
        .metrics(
            |m| {
                m.membership_config
                    .membership()
                    .voter_ids()
                    .collect::<BTreeSet<_>>()
                    == want
            },
            "the new member sees the new voters",
        )
        .await
        .unwrap();

    // Without `stay`, the leader and the new member are a majority.
    c.stop(stay).await;
    let cl = claim(1, c.ids[new]);
    assert_eq!(
        c.node(new).submit(lock("x", &cl)).await.unwrap(),
        LockOutcome::Granted(cl)
    );
    let err = c.node(new).probe().await;
    assert_eq!(
        err.to_string(),
        format!("2 of 3 nodes reachable ({} down)", NAMES[stay])
    );
    c.shutdown().await;
}
