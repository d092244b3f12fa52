//! What the service hands up about accounts and sessions: the values the contract shows, no
//! storage detail and no credential. Times are milliseconds since the Unix epoch (UTC), as
//! stored.

/// An account: never its password hash.
#[derive(Clone)]
pub struct Account {
    pub id: String,
    /// Normalised (see [`crate::domain::Email`]).
    pub email: String,
    pub name: String,
    pub is_active: bool,
    pub is_verified: bool,
    pub is_superuser: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// Whether the account has a password (a passkey-only account has none).
    pub has_password: bool,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the address: this may reach a log.
        f.debug_struct("Account")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A live session, as its user sees it.
#[derive(Clone, Debug)]
pub struct SessionView {
    pub id: String,
    pub created_at: i64,
    /// The last login or refresh.
    pub last_used_at: i64,
    /// When it ends unless refreshed before (never later than its absolute end).
    pub expires_at: i64,
    pub user_agent: Option<String>,
    /// The client address at the last login or refresh.
    pub ip: Option<String>,
    /// The session of the access token that asked.
    pub current: bool,
}
