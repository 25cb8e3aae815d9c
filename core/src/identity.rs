//! [`Identity`]: who a validated token (or a deferral statement built from
//! one) says is asking. Produced by `vmr-auth`, recorded by the alias service,
//! carried in TOK statements.

use vmr_protocol::AuthMethod;

/// Who the validated token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Stable unique user id. Exchange: `"<msexchuid>@<amurl>"`; NAA: `"<tid>/<oid>"`.
    pub user_id: String,
    /// E-mail address, when the token carries one.
    pub email: Option<String>,
    /// Display name, when the token carries one.
    pub display_name: Option<String>,
    /// Which kind of token it was.
    pub method: AuthMethod,
    /// The token's `exp`, Unix seconds.
    pub expires_at: i64,
}
