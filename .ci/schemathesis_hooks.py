"""Schemathesis hooks for .ci/schemathesis.sh (loaded with SCHEMATHESIS_HOOKS).

- A fresh account for every test case of an operation that takes a bearer token: registered
  and logged in over HTTP, or, for the administration endpoints (/users..., /invitations...,
  /events, /webhooks...), created as a superuser with `auth-server create-superuser` (as an
  operator would) and logged in. So no case can end the session, change the password of,
  deactivate or delete an account another case relies on, and no superuser is shared.
- The failures no schema can prevent, dropped narrowly (by operation, check, status and the
  problem document's content), each with the reason. Everything else schemathesis finds fails
  the run.

.ci/schemathesis.sh sets ST_BASE_URL, ST_AUTH_SERVER (the binary), ST_SERVER_DIR (the server's
working directory) and ST_SERVER_ENV (the file of its settings, one VAR=value a line).
"""

import ast
import os
import subprocess
import threading
import uuid
import zlib

import requests
import schemathesis

# CPython 3.11's `ast.parse` is not safe in two threads at once: it can fail with "SystemError:
# AST constructor recursion depth mismatch" (python/cpython#106905), and hypothesis parses
# sources (to describe filters) from both of schemathesis's workers. One parse at a time.
_AST_LOCK = threading.RLock()
_ast_parse = ast.parse


def _parse_alone(*args, **kwargs):
    with _AST_LOCK:
        return _ast_parse(*args, **kwargs)


ast.parse = _parse_alone

BASE_URL = os.environ["ST_BASE_URL"]
AUTH_SERVER = os.environ["ST_AUTH_SERVER"]
SERVER_DIR = os.environ["ST_SERVER_DIR"]
with open(os.environ["ST_SERVER_ENV"], encoding="utf-8") as settings:
    SERVER_ENV = dict(line.rstrip("\n").split("=", 1) for line in settings if "=" in line)
# Where the failures dropped below are listed, if set.
FILTERED_LOG = os.environ.get("ST_FILTERED_LOG")
# setpriv --pdeathsig KILL, when the script found it: the CLI dies with schemathesis.
ORPHAN_GUARD = os.environ.get("ST_ORPHAN_GUARD", "").split()

# Passes the password policy (length and zxcvbn score) for any fresh address.
PASSWORD = "fresh fuzzing passphrase, never guessed"


def _fresh_email():
    return f"st-{uuid.uuid4().hex}@example.com"


def _log_in(email):
    response = requests.post(
        f"{BASE_URL}/login", json={"email": email, "password": PASSWORD}, timeout=60
    )
    response.raise_for_status()
    return response.json()["access_token"]


def _fresh_user():
    email = _fresh_email()
    response = requests.post(
        f"{BASE_URL}/register",
        json={"email": email, "password": PASSWORD, "name": "Fuzz"},
        timeout=60,
    )
    response.raise_for_status()
    return _log_in(email)


def _fresh_superuser():
    email = _fresh_email()
    env = {
        "PATH": os.environ["PATH"],
        **SERVER_ENV,
        "AUTH_SERVER_PASSWORD": PASSWORD,
        "RUST_LOG": "warn",
    }
    subprocess.run(
        [*ORPHAN_GUARD, AUTH_SERVER, "create-superuser", "--email", email, "--name", "Fuzz"],
        cwd=SERVER_DIR,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=60,
    )
    return _log_in(email)


def _label(operation):
    return f"{operation.method.upper()} {operation.path}"


def _is_positive(case):
    return case.meta is not None and case.meta.generation.mode.is_positive


def _heads(value):
    """A coin that the generated value throws, so that a run with the same seed is the same."""
    return zlib.crc32(str(value).encode("utf-8", "surrogatepass")) % 2 == 0


# Where a case confirms the account's password: half of the cases whose field holds a string get
# the fresh account's real one, so that the paths past the check (deleting the account, changing
# the password or the email) are fuzzed too, not only the 403. A string stays a string: the
# field's only constraint, so the case stays as valid or invalid as it was generated.
CURRENT_PASSWORD_FIELD = {
    "DELETE /me": "password",
    "PUT /me/password": "current_password",
    "PUT /me": "current_password",
    "PATCH /me": "current_password",
    "POST /me/passkeys/options": "password",
    "DELETE /me/passkeys/{id}": "password",
}


def _own_session(token):
    response = requests.get(
        f"{BASE_URL}/me/sessions", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    response.raise_for_status()
    return next(session["id"] for session in response.json() if session["current"])


# refresh_interval=None: no caching, `get` runs for every case.
@schemathesis.auth(refresh_interval=None)
class FreshAccount:
    def get(self, case, context):
        if not case.operation.definition.raw.get("security"):
            return None
        if case.operation.path.startswith(("/users", "/invitations", "/webhooks")) or case.operation.path == "/events":
            return _fresh_superuser(), None
        token = _fresh_user()
        if _label(case.operation) == "DELETE /me/sessions/{id}":
            return token, _own_session(token)
        return token, None

    def set(self, case, account, context):
        token, session = account
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {token}"
        field = CURRENT_PASSWORD_FIELD.get(_label(case.operation))
        body = case.body
        if field and isinstance(body, dict) and isinstance(body.get(field), str) and _heads(body[field]):
            body[field] = PASSWORD
        # Half of the schema-valid session ids become the account's own session, so that the
        # revocation is fuzzed too, not only the 404 for a random UUID.
        path = case.path_parameters
        if session and _is_positive(case) and isinstance(path, dict) and _heads(path.get("id")):
            path["id"] = session


# Schema-valid tokens that are no live token: random strings cannot be a token from a mail
# (the tokens are random, 256 bits), so these operations answer 400 INVALID_TOKEN, as their
# documents say. Only the positive-data check, only that status and code.
TOKEN_FROM_A_LINK = {"POST /password-reset/confirm", "POST /verify/confirm"}

# The same for an invitation's token (a registration's optional `invitation`, REGISTRATION=open):
# a schema-valid string is no invitation's token, so POST /register answers 400
# INVITATION_INVALID, as its document says. Only that status and code.
INVITATION_FROM_A_LINK = {"POST /register"}

# New passwords that are long enough but too easy to guess: the policy's zxcvbn score (given the
# account's email and name) is no shape. Only a 422 whose every error is that one, on the field.
NEW_PASSWORD_FIELD = {
    "POST /register": "password",
    "PUT /me/password": "new_password",
    "POST /password-reset/confirm": "new_password",
}


# A passkey's answer cannot be made up: a schema-valid object is no authenticator's credential,
# so these operations answer 422 naming the field (or, for one that parses, 401: no live
# ceremony, or a failed check). Only a 422 whose every error is on that field.
PASSKEY_FIELD = {
    "POST /me/passkeys": "credential",
    "POST /login/passkey": "credential",
    "POST /me/passkeys/step-up": "credential",
    "POST /login/mfa": "passkey",
}

# The password a passkey change asks for is optional in the document (an account without a
# password leaves it out), required of an account with one, as every fresh account is: no shape
# says which. Only a 422 whose every error is "is required" on that field.
PASSWORD_UNLESS_PASSWORDLESS = {
    "POST /me/passkeys/options": "password",
    "DELETE /me/passkeys/{id}": "password",
}


# A webhook's URL: the document says its scheme and length; what no shape can say (a host the
# URL parser takes, no user name or password, no fragment, not a private or loopback address,
# by its literal or by what the name resolves to) is a 422 naming `url`. Only a 422 whose every
# error is on that field.
WEBHOOK_URL = {"POST /webhooks", "PATCH /webhooks/{id}"}

# At most 50 webhook endpoints, whoever made them: fuzzing registers more than that. Only a 409
# WEBHOOK_LIMIT.
WEBHOOK_LIMIT = {"POST /webhooks"}


def _problem(response):
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@schemathesis.hook
def filter_failure(context, failure, case, response):
    keep = _keep(failure, case, response)
    if not keep and FILTERED_LOG:
        with open(FILTERED_LOG, "a", encoding="utf-8") as log:
            # One line per failure: a page's HTML body has line breaks of its own.
            body = " ".join(response.text_lossy().split())
            log.write(f"{_label(case.operation)} {response.status_code} {body}\n")
    return keep


# GET /register is also the registration page (PAGES=true, the default): a 405 on /register
# rightly allows GET and HEAD, which the API document (the JSON operations only) does not list.
PAGE_METHODS = {"/register": {"GET", "HEAD", "POST"}}


def _allowed(response):
    value = response.headers.get("allow") or response.headers.get("Allow") or ""
    if isinstance(value, list):
        value = ",".join(value)
    return {method.strip().upper() for method in value.split(",") if method.strip()}


def _keep(failure, case, response):
    page = PAGE_METHODS.get(case.operation.path)
    if failure.code == "ST205" and page:  # the Allow header of a 405
        return not (response.status_code == 405 and _allowed(response) == page)
    if failure.code == "ST204" and page:  # an undeclared method: the page answers GET and HEAD
        content_type = response.headers.get("content-type") or response.headers.get("Content-Type") or ""
        if isinstance(content_type, list):
            content_type = ",".join(content_type)
        return not (
            case.method.upper() in page
            and response.status_code == 200
            and content_type.startswith("text/html")
        )
    if failure.code != "ST202":  # positive_data_acceptance: schema-valid request refused
        return True
    label = _label(case.operation)
    problem = _problem(response)
    if (
        label in TOKEN_FROM_A_LINK
        and response.status_code == 400
        and problem.get("code") == "INVALID_TOKEN"
    ):
        return False
    if (
        label in WEBHOOK_LIMIT
        and response.status_code == 409
        and problem.get("code") == "WEBHOOK_LIMIT"
    ):
        return False
    if (
        label in INVITATION_FROM_A_LINK
        and response.status_code == 400
        and problem.get("code") == "INVITATION_INVALID"
    ):
        return False
    errors = problem.get("errors") or []
    if (
        label in WEBHOOK_URL
        and response.status_code == 422
        and errors
        and all(error.get("field") == "url" for error in errors)
    ):
        return False
    field = PASSKEY_FIELD.get(label)
    if (
        field is not None
        and response.status_code == 422
        and errors
        and all(error.get("field", "").startswith(field) for error in errors)
    ):
        return False
    field = PASSWORD_UNLESS_PASSWORDLESS.get(label)
    if (
        field is not None
        and response.status_code == 422
        and errors
        and all(
            error.get("field") == field and error.get("message") == "is required"
            for error in errors
        )
    ):
        return False
    field = NEW_PASSWORD_FIELD.get(label)
    if (
        field is not None
        and response.status_code == 422
        and errors
        and all(
            error.get("field") == field
            and error.get("message", "").startswith("is too easy to guess")
            for error in errors
        )
    ):
        return False
    return True
