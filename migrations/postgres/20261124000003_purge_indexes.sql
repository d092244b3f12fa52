-- For the background purge of ended sessions and spent tokens, and the admin listing.
CREATE INDEX sessions_ended_idx ON sessions (refresh_expires_at);
CREATE INDEX sessions_revoked_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX one_time_tokens_expires_idx ON one_time_tokens (expires_at);
CREATE INDEX users_created_idx ON users (created_at);
