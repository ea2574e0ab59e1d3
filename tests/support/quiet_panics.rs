//! Shared by the model-based and stress tests (included with `#[path]`).

/// Test services panic on purpose with the message `"inner panic"`; their panic messages would
/// flood the output. Every other panic (a failed assertion) still reaches the default hook.
pub fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"inner panic") {
                default(info);
            }
        }));
    });
}
