//! The one line editor behind every text box (the filter, the command line,
//! the fetch prompt), so that typing and erasing work alike in all of them.
//! Each box decides what Enter, Esc and the keys it leaves alone mean.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key did to the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Edit {
    /// Enter: use the line.
    Submit,
    /// Esc: drop it.
    Cancel,
    /// A character was typed or erased.
    Changed,
    /// Backspace with nothing left to erase.
    BackspaceOnEmpty,
    /// A key the editor leaves to the box (arrows, Ctrl chords).
    Other,
}

/// Applies `k` to `line`.
pub(super) fn edit_line(line: &mut String, k: &KeyEvent) -> Edit {
    match k.code {
        KeyCode::Enter => Edit::Submit,
        KeyCode::Esc => Edit::Cancel,
        KeyCode::Backspace => match line.pop() {
            Some(_) => Edit::Changed,
            None => Edit::BackspaceOnEmpty,
        },
        KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
            line.push(c);
            Edit::Changed
        }
        _ => Edit::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn types_erases_and_leaves_the_rest_to_the_box() {
        let none = KeyModifiers::NONE;
        let mut line = String::new();
        assert_eq!(
            edit_line(&mut line, &key(KeyCode::Char('a'), none)),
            Edit::Changed
        );
        assert_eq!(
            edit_line(&mut line, &key(KeyCode::Char('B'), KeyModifiers::SHIFT)),
            Edit::Changed
        );
        assert_eq!(line, "aB");
        assert_eq!(
            edit_line(&mut line, &key(KeyCode::Char('u'), KeyModifiers::CONTROL)),
            Edit::Other
        );
        assert_eq!(edit_line(&mut line, &key(KeyCode::Up, none)), Edit::Other);
        assert_eq!(
            edit_line(&mut line, &key(KeyCode::Enter, none)),
            Edit::Submit
        );
        assert_eq!(line, "aB");
        assert_eq!(
            edit_line(&mut line, &key(KeyCode::Backspace, none)),
            Edit::Changed
        );
        assert_eq!(
            edit_line(&mut line, &key(KeyCode::Backspace, none)),
            Edit::Changed
        );
        assert_eq!(
            edit_line(&mut line, &key(KeyCode::Backspace, none)),
            Edit::BackspaceOnEmpty
        );
        assert_eq!(edit_line(&mut line, &key(KeyCode::Esc, none)), Edit::Cancel);
        assert_eq!(line, "");
    }
}
