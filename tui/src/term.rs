//! Entering and leaving the full-screen terminal, also on a panic.

use std::io::{self, Write};
use std::sync::Once;

use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::execute;
use ratatui::DefaultTerminal;

/// Raw mode, the alternate screen and mouse reporting; a panic hook that
/// restores the terminal before the panic message is printed. Call
/// [`restore`] when done.
pub fn init() -> io::Result<DefaultTerminal> {
    // ratatui installs its own hook (restore, then the previous hook);
    // ours wraps it to turn mouse reporting off first.
    let terminal = ratatui::try_init().inspect_err(|_| ratatui::restore())?;
    install_panic_hook();
    if let Err(e) = execute!(io::stdout(), EnableMouseCapture) {
        restore();
        return Err(e);
    }
    Ok(terminal)
}

/// Leaves the UI's terminal modes; safe to call more than once.
pub fn restore() {
    let _ = execute!(io::stdout(), DisableMouseCapture);
    ratatui::restore();
    let _ = io::stdout().flush();
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = execute!(io::stdout(), DisableMouseCapture);
            // `previous` is ratatui's: it restores the screen, then prints.
            previous(info);
            // A panic in any task leaves the screen restored under a UI
            // that would keep drawing: end the process instead.
            std::process::exit(101);
        }));
    });
}
