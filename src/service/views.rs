//! Database rows into what the service hands up (`domain::Account`, `domain::SessionView`):
//! the HTTP layer never sees a row, so never a password hash or a session's token state.

use crate::db::{sessions, users};
use crate::domain::{Account, SessionView};

/// An account from either row that holds it: the whole one, or the one the check of an access
/// token reads (without the hash).
macro_rules! account_from {
    ($row:ty, $has_password:expr) => {
        impl From<$row> for Account {
            fn from(u: $row) -> Self {
                Self {
                    has_password: $has_password(&u),
                    id: u.id,
                    email: u.email,
                    name: u.name,
                    is_active: u.is_active,
                    is_verified: u.is_verified,
                    is_superuser: u.is_superuser,
                    created_at: u.created_at,
                    updated_at: u.updated_at,
                }
            }
        }
    };
}
account_from!(users::User, users::User::has_password);
account_from!(sessions::LiveUser, |u: &sessions::LiveUser| u.has_password);

/// A session as its user sees it; `current` when it is the session `current_id`.
pub(crate) fn session_view(s: sessions::Session, current_id: &str) -> SessionView {
    SessionView {
        current: s.id == current_id,
        created_at: s.created_at,
        last_used_at: s.last_used_at,
        // The sliding end, or the absolute one if sooner.
        expires_at: s.refresh_expires_at.min(s.expires_at),
        user_agent: s.user_agent,
        ip: s.ip,
        id: s.id,
    }
}
