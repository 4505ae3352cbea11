//! Text measured in terminal cells, not in chars: a wide character (名)
//! takes two cells, a combining mark none. Everything that cuts text to a
//! column marks the cut with `…`, so a cut name never passes for a whole
//! one, and never splits a wide character in half.

use unicode_width::UnicodeWidthChar;

/// Cells `c` takes (control characters: none).
fn char_width(c: char) -> usize {
    c.width().unwrap_or(0)
}

/// Cells `s` takes on screen.
pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// The longest start of `s` that fits in `w` cells (zero-width marks stay
/// with the character before them).
pub fn head(s: &str, w: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += char_width(c);
        if used > w {
            return &s[..i];
        }
    }
    s
}

/// The longest end of `s` that fits in `w` cells, not starting with a
/// zero-width mark whose character was cut off.
pub fn tail(s: &str, w: usize) -> &str {
    let mut used = 0;
    let mut start = s.len();
    for (i, c) in s.char_indices().rev() {
        used += char_width(c);
        if used > w {
            break;
        }
        start = i;
    }
    let t = &s[start..];
    t.trim_start_matches(|c: char| char_width(c) == 0)
}

/// `s` padded with spaces to `w` cells (left-aligned; never cut).
pub fn pad(s: &str, w: usize) -> String {
    let mut out = s.to_string();
    out.extend(std::iter::repeat_n(' ', w.saturating_sub(width(s))));
    out
}

/// Keeps the end of `s` within `w` cells: `…` and the tail.
pub fn fit_left(s: &str, w: usize) -> String {
    if width(s) <= w {
        return s.to_string();
    }
    if w == 0 {
        return String::new();
    }
    format!("…{}", tail(s, w - 1))
}

/// Keeps the start of `s` within `w` cells: the head and `…`.
pub fn fit_right(s: &str, w: usize) -> String {
    if width(s) <= w {
        return s.to_string();
    }
    if w == 0 {
        return String::new();
    }
    format!("{}…", head(s, w - 1))
}

/// A path within `w` cells, keeping what tells files apart: the whole
/// file name, after as much of the folders as fits (`docs/ar…/plan.md`).
/// A file name too long on its own keeps its start and ends in `…`.
pub fn fit_path(s: &str, w: usize) -> String {
    if width(s) <= w {
        return s.to_string();
    }
    let Some(slash) = s.rfind('/') else {
        return fit_right(s, w);
    };
    let (dir, name) = (&s[..slash], &s[slash + 1..]);
    let name_w = width(name);
    if name_w + 2 <= w {
        return format!("{}…/{name}", head(dir, w - 2 - name_w));
    }
    if w >= 3 {
        return format!("…/{}", fit_right(name, w - 2));
    }
    fit_right(name, w)
}

/// Word-wraps `s`: the first row `first` cells wide, the others `rest`.
/// Words longer than a row are cut across rows. Always at least one row.
pub fn wrap(s: &str, first: usize, rest: usize) -> Vec<String> {
    let mut rows = Vec::new();
    let mut row = String::new();
    let mut room = first.max(1);
    let mut used = 0;
    for word in s.split(' ') {
        let ww = width(word);
        let gap = usize::from(used > 0);
        if used + gap + ww <= room {
            if gap == 1 {
                row.push(' ');
            }
            row.push_str(word);
            used += gap + ww;
            continue;
        }
        // The word goes on a new row (cut if even a whole row is too narrow).
        let mut word = word;
        if used > 0 {
            rows.push(std::mem::take(&mut row));
            room = rest.max(1);
        }
        while width(word) > room {
            let mut part = head(word, room);
            if part.is_empty() {
                // A wide character in a one-cell row: give it its own row.
                part = &word[..word.chars().next().map_or(word.len(), char::len_utf8)];
            }
            rows.push(part.to_string());
            word = &word[part.len()..];
            room = rest.max(1);
        }
        row.push_str(word);
        used = width(word);
    }
    // A word cut to the last cell leaves nothing behind it.
    if !row.is_empty() || rows.is_empty() {
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDE: &str = "ünïcödé-名前.txt";

    #[test]
    fn widths_count_cells() {
        assert_eq!(width("abc"), 3);
        assert_eq!(width(WIDE), 16, "名前 take two cells each");
        assert_eq!(width("e\u{301}"), 1, "a combining accent takes none");
        assert_eq!(pad("名前", 6), "名前  ");
        assert_eq!(pad("toolong", 3), "toolong");
    }

    #[test]
    fn cuts_never_split_a_wide_character_and_end_in_an_ellipsis() {
        assert_eq!(fit_right(WIDE, 16), WIDE);
        // 9 cells: "ünïcödé-" is 8, 名 would make 10.
        assert_eq!(fit_right(WIDE, 10), "ünïcödé-…");
        assert_eq!(width(&fit_right(WIDE, 10)), 9);
        assert_eq!(fit_right(WIDE, 11), "ünïcödé-名…");
        assert_eq!(fit_left(WIDE, 8), "…前.txt");
        assert_eq!(fit_left("abcdef", 4), "…def");
        assert_eq!(fit_left("abc", 4), "abc");
        assert_eq!(fit_right("abcdef", 4), "abc…");
        assert_eq!(fit_right("abcdef", 0), "");
        assert_eq!(tail("名\u{301}", 1), "", "no orphaned accent");
        assert_eq!(head("名前", 3), "名");
    }

    #[test]
    fn paths_keep_the_file_name() {
        let p = "docs/architecture/overview.md";
        assert_eq!(fit_path(p, 40), p);
        assert_eq!(fit_path(p, 20), "docs/ar…/overview.md");
        assert_eq!(width(&fit_path(p, 20)), 20);
        assert_eq!(fit_path(p, 13), "…/overview.md");
        assert_eq!(fit_path(p, 10), "…/overvie…");
        assert_eq!(fit_path("notes/ünïcödé-名前.txt", 12), "…/ünïcödé-…");
        assert_eq!(fit_path(WIDE, 12), "ünïcödé-名…");
        assert_eq!(fit_path(p, 2), "o…");
    }

    #[test]
    fn wrapping_breaks_at_spaces_by_width() {
        assert_eq!(wrap("a bb ccc", 4, 4), ["a bb", "ccc"]);
        assert_eq!(
            wrap("conflict on plan.txt", 12, 8),
            ["conflict on", "plan.txt"]
        );
        assert_eq!(wrap("abcdefghij", 4, 3), ["abcd", "efg", "hij"]);
        assert_eq!(wrap("名前名前", 5, 5), ["名前", "名前"]);
        assert_eq!(wrap("", 5, 5), [""]);
        assert_eq!(
            wrap("名", 1, 1),
            ["名"],
            "no endless loop on a too-narrow row"
        );
        for row in wrap("a fairly long feed line about ünïcödé-名前.txt", 10, 7) {
            assert!(width(&row) <= 10, "{row}");
        }
    }
}
