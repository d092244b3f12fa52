#!/usr/bin/env bash
# Checks that the boundary tests can fail: applies one small change at a time to a time rule
# (a comparison moved by one, a cap removed, the wall clock read instead of the server's), runs
# the test that guards it, and expects it to FAIL; then restores the file. Prints one line per
# mutant and exits non-zero if any mutant survived. Not part of .ci/run (each mutant is a
# rebuild); run it after changing a time rule.
# Usage: .ci/boundary-mutants.sh [pattern]   (only the mutants whose line contains pattern)
set -uo pipefail
cd "$(dirname "$0")/.."

# file @@ exact text @@ replacement @@ test filter (tests/api)
# (Both ends of a session are mutated at once in refresh.rs: a refresh token never outlives its
# session, so either comparison alone catches the end, and one mutated alone survives.)
MUTANTS=$(cat <<'EOF'
src/service/refresh.rs @@ now.saturating_sub(chain.refreshed_at) <= reuse_window_ms @@ now.saturating_sub(chain.refreshed_at) < reuse_window_ms @@ time::the_reuse_window
src/service/refresh.rs @@ now.saturating_sub(chain.refreshed_at) <= reuse_window_ms @@ now.saturating_sub(chain.refreshed_at) <= reuse_window_ms + 1 @@ time::the_reuse_window
src/service/refresh.rs @@ if now >= chain.expires_at || now >= chain.refresh_expires_at { @@ if now > chain.expires_at || now > chain.refresh_expires_at { @@ time::the_session_lifetime
src/service/sessions.rs @@             .min(session.refresh_expires_at), @@             .max(0), @@ time::the_session_lifetime
src/service/login.rs @@             .min(expires_at), @@             .max(0), @@ time::the_session_lifetime
src/db/sessions.rs @@ s.refresh_expires_at > $2 @@ s.refresh_expires_at >= $2 @@ time::the_session_lifetime
src/auth/tokens.rs @@ if now > claims.exp.saturating_add(LEEWAY_SECONDS) @@ if now >= claims.exp.saturating_add(LEEWAY_SECONDS) @@ time::the_exp_leeway
src/auth/tokens.rs @@ pub const LEEWAY_SECONDS: i64 = 30; @@ pub const LEEWAY_SECONDS: i64 = 31; @@ time::the_exp_leeway
src/service/sessions.rs @@     let iat = ms_to_s(now); @@     let iat = chrono::Utc::now().timestamp(); @@ time::the_exp_leeway
src/service/lockout.rs @@             && until > now @@             && until >= now @@ time::lockouts_double
src/service/lockout.rs @@             .min(ms(state.config.lockout.max)), @@             .max(0), @@ time::lockouts_double
src/service/lockout.rs @@ .saturating_mul(1i64 << doublings) @@ .saturating_mul(1i64 << doublings.saturating_sub(1)) @@ time::lockouts_double
src/db/one_time_tokens.rs @@ used_at IS NULL AND expires_at > $3 @@ used_at IS NULL AND expires_at >= $3 @@ time::a_reset_token_expires
src/db/one_time_tokens.rs @@ used_at IS NULL AND expires_at > $3 @@ used_at IS NULL AND expires_at >= $3 @@ time::a_verification_token_expires
src/db/sessions.rs @@ WHERE revoked_at < $1 OR @@ WHERE revoked_at <= $1 OR @@ time::the_purge
src/db/sessions.rs @@ OR refresh_expires_at < $1 OR @@ OR refresh_expires_at <= $1 OR @@ time::the_purge
src/db/sessions.rs @@ OR expires_at < $1"; @@ OR expires_at <= $1"; @@ time::the_purge
src/db/one_time_tokens.rs @@ WHERE used_at < $1 OR @@ WHERE used_at <= $1 OR @@ time::the_purge
src/db/one_time_tokens.rs @@ OR expires_at < $1"; @@ OR expires_at <= $1"; @@ time::the_purge
src/db/outbox.rs @@ WHERE sent_at < $1 OR @@ WHERE sent_at <= $1 OR @@ time::the_purge
src/db/outbox.rs @@ OR failed_at < $1"; @@ OR failed_at <= $1"; @@ time::the_purge
src/db/throttle.rs @@ WHERE last_sent_at < $1"; @@ WHERE last_sent_at <= $1"; @@ time::the_purge
src/db/mail_quota.rs @@ WHERE window_start < $1"; @@ WHERE window_start <= $1"; @@ time::the_purge
src/db/login_attempts.rs @@ WHERE updated_at < $1 AND @@ WHERE updated_at <= $1 AND @@ time::the_purge
src/db/login_attempts.rs @@ OR locked_until <= $2) @@ OR locked_until < $2) @@ time::the_purge
src/service/maintenance.rs @@ purge(&state.db, state.clock.now_ms(), audit_retention) @@ purge(&state.db, chrono::Utc::now().timestamp_millis(), audit_retention) @@ time::the_purge
src/service/mfa.rs @@ .is_some_and(|at| state.clock.now_ms() < at.saturating_add(window)) @@ .is_some_and(|at| state.clock.now_ms() <= at.saturating_add(window)) @@ mfa::the_step_up_window_ends
src/db/mfa.rs @@ used_at IS NULL AND expires_at > $2 AND attempts < $3 @@ used_at IS NULL AND expires_at >= $2 AND attempts < $3 @@ mfa::an_mfa_token_lives_its_lifetime
src/db/mfa.rs @@ used_at IS NULL AND expires_at > $2 AND attempts < $3 @@ used_at IS NULL AND expires_at > $2 AND attempts <= $3 @@ mfa::an_mfa_token_dies_after_five
src/db/mfa.rs @@ (last_step IS NULL OR last_step < $2) @@ (last_step IS NULL OR last_step <= $2) @@ mfa::codes_have_one_step
src/auth/totp.rs @@ pub const SKEW_STEPS: i64 = 1; @@ pub const SKEW_STEPS: i64 = 2; @@ mfa::codes_have_one_step
src/auth/totp.rs @@ pub const SKEW_STEPS: i64 = 1; @@ pub const SKEW_STEPS: i64 = 0; @@ mfa::codes_have_one_step
src/db/mfa.rs @@ DELETE FROM mfa_challenges WHERE expires_at < $1 @@ DELETE FROM mfa_challenges WHERE expires_at <= $1 @@ time::the_purge
src/db/invitations.rs @@ revoked_at IS NULL AND expires_at > ", @@ revoked_at IS NULL AND expires_at >= ", @@ invitations::an_invitation_expires
src/service/invitations.rs @@         expires_at: now + ms(ttl), @@         expires_at: now + ms(ttl) + 1, @@ invitations::an_invitation_expires
src/db/invitations.rs @@ WHERE accepted_at < $1 OR @@ WHERE accepted_at <= $1 OR @@ invitations::ended_invitations
src/db/invitations.rs @@ OR revoked_at < $1 OR @@ OR revoked_at <= $1 OR @@ invitations::ended_invitations
src/db/invitations.rs @@ OR expires_at < $1"; @@ OR expires_at <= $1"; @@ invitations::ended_invitations
EOF
)

survived=0
# A mutant never outlives the script: the file is put back however it ends.
current=
restore() { if [ -n "$current" ] && [ -f "$current.orig" ]; then mv "$current.orig" "$current"; fi; }
trap 'restore' EXIT
trap 'exit 130' INT TERM HUP
while IFS= read -r line; do
    [ -z "$line" ] && continue
    case "$line" in *"${1:-}"*) ;; *) continue ;; esac
    file=${line%% @@ *}; rest=${line#* @@ }
    from=${rest%% @@ *}; rest=${rest#* @@ }
    to=${rest%% @@ *}; filter=${rest#* @@ }
    if ! grep -qF -- "$from" "$file"; then
        echo "MISSING  $file: '$from' not found (update this script)"
        survived=1
        continue
    fi
    cp "$file" "$file.orig"
    current=$file
    FROM="$from" TO="$to" perl -0pi -e 's/\Q$ENV{FROM}\E/$ENV{TO}/' "$file"
    if cargo test --quiet --test api "$filter" >/dev/null 2>&1; then
        echo "SURVIVED $file: '$from' -> '$to' ($filter passed)"
        survived=1
    else
        echo "killed   $file: '$from' -> '$to' ($filter failed)"
    fi
    restore
    current=
done <<< "$MUTANTS"
exit $survived
