//! Entry point of the pane's wasm binary; everything lives in the library.

fn main() {
    vmr_addin::start();
}
