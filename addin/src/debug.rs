//! The pane's debug log (shown when the integration sets `pane_debug_logs`):
//! what happened while starting, with times since the page began, plus what
//! `boot.js` recorded (script errors, failed loads, policy violations).
//! Every line also goes to the browser console.

use std::cell::RefCell;

thread_local! {
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Adds a line, stamped with milliseconds since the page began.
pub fn log(line: impl AsRef<str>) {
    // Whole milliseconds: formatting floats would add kilobytes to the wasm.
    let ms = web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now() as u64)
        .unwrap_or(0);
    let line = format!("{ms:>6} ms  {}", line.as_ref());
    web_sys::console::debug_1(&line.as_str().into());
    LINES.with(|l| l.borrow_mut().push(line));
}

/// The pane's lines, then everything `boot.js` recorded.
pub fn lines() -> Vec<String> {
    let mut all = LINES.with(|l| l.borrow().clone());
    all.extend(
        crate::office::boot_errors()
            .into_iter()
            .map(|e| format!("boot.js: {e}")),
    );
    all
}
