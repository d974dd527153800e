#!/usr/bin/env python3
"""A small LTI 1.3 platform (an LMS stand-in) for workspaced's end-to-end tests, built on lti1p3platform.

Run it through `scripts/lti-platform.sh --port 0 --tool http://127.0.0.1:PORT`, which installs the pinned
packages into a virtualenv first. It prints one line of JSON with its URLs on stdout, then logs to stderr only.
Endpoints, users and the bad-launch cases are described in tests/lti/README.md.

lti1p3platform does the protocol work: the OIDC login initiation URL (OIDCLoginAbstract), the checks on the
tool's auth request and the id_token for resource link and deep linking launches (LTIAdvantageMessageLaunchAbstract,
signed by Registration), the platform key set and the token endpoint with the tool's JWT client assertion
(LTI1P3PlatformConfAbstract), the NRPS membership container (NamesRoleProvisioningService) and the deep linking
response (validate_deeplinking_resp). What it does not check (the auth request's scope, response_type,
response_mode, prompt, redirect_uri and login_hint; the client assertion's iss, sub, aud and exp; the deep linking
response's iss, aud, version, deployment and data) is checked here, in the functions named `check_*`.
"""

from __future__ import annotations

import os
import sys

# This folder holds a file named platform.py, which would hide the standard library's `platform` module (that uuid,
# requests and others import) from every script run from here: take the folder off the import path first.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import base64
import hashlib
import hmac
import html
import json
import secrets
import socket
import threading
import time
import traceback
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
from jwcrypto.jwk import JWK

from lti1p3platform import exceptions as lti_exc
from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract
from lti1p3platform.membership import Context
from lti1p3platform.message_launch import LTIAdvantageMessageLaunchAbstract
from lti1p3platform.oidc_login import OIDCLoginAbstract
from lti1p3platform.registration import Registration
from lti1p3platform.request import Request, TRequest
from lti1p3platform.service_connector import NamesRoleProvisioningService, TPage

CLIENT_ID = "workspaced-test"
DEPLOYMENT_ID = "dep-1"
KNOWN_DEPLOYMENTS = ("dep-1", "dep-2")
UNKNOWN_DEPLOYMENT = "dep-404"
OTHER_CLIENT_ID = "some-other-tool"

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
DL_CLAIM = "https://purl.imsglobal.org/spec/lti-dl/claim/"
ROLE = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
LEARNER = ROLE + "Learner"
INSTRUCTOR = ROLE + "Instructor"
TEACHING_ASSISTANT = "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"
COURSE_OFFERING = "http://purl.imsglobal.org/vocab/lis/v2/course#CourseOffering"
NRPS_SCOPE = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
NRPS_MEDIA_TYPE = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

CONTEXT = {"id": "c-101", "label": "CS101", "title": "Intro to CS"}
RESOURCE_LINK = {"id": "rl-1", "title": "Workspace"}

# A teaching assistant gets the sub-role and, as the LTI 1.3 spec's best practice asks (and Canvas does), its
# principal role too.
USERS: t.Dict[str, t.Dict[str, t.Any]] = {
    "ada": {"sub": "u-ada-7f3", "given_name": "Ada", "family_name": "Lovelace", "roles": [LEARNER], "sis": "sis-1001"},
    "bea": {"sub": "u-bea-2c9", "given_name": "Bea", "family_name": "Hopper", "roles": [LEARNER], "sis": "sis-1002"},
    "ina": {"sub": "u-ina-5d1", "given_name": "Ina", "family_name": "Dijkstra", "roles": [INSTRUCTOR], "sis": "sis-2001"},
    "tom": {
        "sub": "u-tom-8b4",
        "given_name": "Tom",
        "family_name": "Kernighan",
        "roles": [TEACHING_ASSISTANT, INSTRUCTOR],
        "sis": "sis-2002",
    },
    "cy": {"sub": "u-cy-1e6", "given_name": "Cy", "family_name": "Ritchie", "roles": [LEARNER], "sis": "sis-1003"},
}
for _login, _u in USERS.items():
    _u["login"] = _login
    _u["name"] = f"{_u['given_name']} {_u['family_name']}"
    _u["email"] = f"{_login}@example.edu"
USERS_BY_SUB = {u["sub"]: u for u in USERS.values()}

MESSAGES = ("resource", "deeplink")
CASES = (
    "ok",
    "bad_signature",
    "unknown_kid",
    "expired",
    "wrong_aud",
    "unknown_deployment",
    "unknown_deployment_token",
    "missing_claims",
    "wrong_nonce",
    "replay",
)

# Form and header fields the log shows only by length.
SECRET_FIELDS = {"client_assertion", "JWT", "id_token"}


def log(msg: str) -> None:
    sys.stderr.write(f"lti-platform: {msg}\n")
    sys.stderr.flush()


def new_rsa_pem() -> t.Tuple[str, str]:
    key = JWK.generate(kty="RSA", size=2048)
    return key.export_to_pem(private_key=True, password=None).decode(), key.export_to_pem().decode()


class Keys:
    """The platform's key (the only one in /jwks), an impostor key used with the good key's kid (bad_signature), and
    a stranger key with a kid of its own that /jwks does not have (unknown_kid)."""

    def __init__(self) -> None:
        self.private, self.public = new_rsa_pem()
        self.impostor_private, _ = new_rsa_pem()
        self.stranger_private, stranger_public = new_rsa_pem()
        self.kid = Registration.get_jwk(self.public)["kid"]
        self.stranger_kid = Registration.get_jwk(stranger_public)["kid"]
        assert self.kid != self.stranger_kid


class Harness:
    """Shared state: URLs, keys, the log, the deep linking responses received, the last good launch per user."""

    def __init__(self, port: int, tool: str) -> None:
        self.issuer = f"http://localhost:{port}"
        self.tool = tool.rstrip("/")
        self.tool_login = self.tool + "/lti/login"
        self.tool_launch = self.tool + "/lti/launch"
        self.tool_jwks = self.tool + "/lti/jwks"
        self.auth_url = self.issuer + "/authorize"
        self.token_url = self.issuer + "/token"
        self.jwks_url = self.issuer + "/jwks"
        self.nrps_url = f"{self.issuer}/nrps/{CONTEXT['id']}"
        self.deep_link_return_url = self.issuer + "/deep_link_return"
        self.return_url = self.issuer + "/return"
        self.keys = Keys()
        self.hint_secret = secrets.token_bytes(32)
        self.lock = threading.Lock()
        self.entries: t.List[t.Dict[str, t.Any]] = []
        self.received: t.List[t.Dict[str, t.Any]] = []
        self.last_ok: t.Dict[str, t.Dict[str, str]] = {}  # user -> {"id_token", "state"}
        self.dl_data: t.Dict[str, t.Dict[str, t.Any]] = {}  # deep linking `data` issued -> its launch

    def info(self) -> t.Dict[str, str]:
        return {
            "issuer": self.issuer,
            "client_id": CLIENT_ID,
            "deployment_id": DEPLOYMENT_ID,
            "auth_url": self.auth_url,
            "token_url": self.token_url,
            "jwks_url": self.jwks_url,
            "base": self.issuer,
        }

    def platform(self, deployment_id: str = DEPLOYMENT_ID, sign_case: str = "ok") -> "HarnessPlatform":
        return HarnessPlatform(harness=self, deployment_id=deployment_id, sign_case=sign_case)

    def record(self, entry: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        with self.lock:
            entry = {"seq": len(self.entries) + 1, "time": round(time.time(), 3), **entry}
            self.entries.append(entry)
        return entry

    def failure(self, path: str, reason: str, **extra: t.Any) -> None:
        self.record({"kind": "failure", "path": path, "reason": reason, **extra})
        log(f"refused {path}: {reason}")

    # lti_message_hint: opaque to the tool; base64url JSON with an HMAC so that a changed hint is noticed.
    def encode_hint(self, fields: t.Dict[str, t.Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode()).rstrip(b"=")
        mac = hmac.new(self.hint_secret, body, hashlib.sha256).digest()[:12]
        return body.decode() + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def decode_hint(self, hint: str) -> t.Optional[t.Dict[str, t.Any]]:
        try:
            body, mac = hint.split(".")
            want = hmac.new(self.hint_secret, body.encode(), hashlib.sha256).digest()[:12]
            if not hmac.compare_digest(base64.urlsafe_b64encode(want).rstrip(b"=").decode(), mac):
                return None
            return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except Exception:  # noqa: BLE001 - any malformed hint is simply not ours
            return None


# ---------------------------------------------------------------------------------------------------------------
# lti1p3platform glue: its abstract classes, filled in.


class HarnessRequest(Request):
    """lti1p3platform's request wrapper over what the HTTP handler parsed."""

    def build_metadata(self, request: t.Dict[str, t.Any]) -> TRequest:
        return {
            "method": request["method"],
            "form_data": request["form"],
            "get_data": request["query"],
            "headers": request["headers"],
            "content_type": request["content_type"],
            "path": request["path"],
            "json": request["json"],
        }


class HarnessRegistration(Registration):
    """The library's Registration; the bad-launch cases change only how the id_token is signed."""

    def __init__(self, keys: Keys, sign_case: str) -> None:
        self.keys = keys
        self.sign_case = sign_case

    def platform_encode_and_sign(self, payload: t.Dict[str, t.Any], expiration: t.Optional[int] = None) -> str:
        if self.sign_case == "expired":
            now = int(time.time())
            payload.update({"iat": now - 3900, "exp": now - 3600})
            return Registration.encode_and_sign(payload, self.keys.private, {"kid": self.keys.kid})
        if self.sign_case == "bad_signature":
            return Registration.encode_and_sign(
                payload, self.keys.impostor_private, {"kid": self.keys.kid}, expiration=expiration
            )
        if self.sign_case == "unknown_kid":
            return Registration.encode_and_sign(
                payload, self.keys.stranger_private, {"kid": self.keys.stranger_kid}, expiration=expiration
            )
        return super().platform_encode_and_sign(payload, expiration=expiration)


class HarnessPlatform(LTI1P3PlatformConfAbstract):
    """One registration: this platform and the workspaced tool under test. Made anew for each request, so the
    tool's key set is fetched again each time (the library caches it in the registration)."""

    def init_platform_config(self, harness: Harness, deployment_id: str, sign_case: str) -> None:  # type: ignore[override]
        self.harness = harness
        self._registration = (
            HarnessRegistration(harness.keys, sign_case)
            .set_iss(harness.issuer)
            .set_client_id(CLIENT_ID)
            .set_deployment_id(deployment_id)
            .set_launch_url(harness.tool_launch)
            .set_deeplink_launch_url(harness.tool_launch)
            .set_oidc_login_url(harness.tool_login)
            .set_tool_key_set_url(harness.tool_jwks)
            .set_platform_public_key(harness.keys.public)
            .set_platform_private_key(harness.keys.private)
        )
        self.set_accepted_deeplinking_types(["ltiResourceLink"])

    def get_registration_by_params(self, **kwargs: t.Any) -> Registration:
        assert self._registration is not None
        return self._registration


class HarnessOIDCLogin(OIDCLoginAbstract):
    def set_lti_message_hint(self, **kwargs: t.Any) -> None:
        self._lti_message_hint = kwargs["hint"]

    def get_redirect(self, url: str) -> str:
        return url


class LaunchRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HarnessLaunch(LTIAdvantageMessageLaunchAbstract):
    """A resource link or deep linking launch for the user, message and case in the lti_message_hint."""

    def __init__(self, request: HarnessRequest, platform: HarnessPlatform, hint: t.Dict[str, t.Any]) -> None:
        super().__init__(request, platform)
        self.harness = platform.harness
        self.hint = hint
        self.user = USERS[hint["user"]]
        self.case = hint["case"]
        self.replayed = False
        self.claims: t.Dict[str, t.Any] = {}

    def prepare_launch(self, preflight_response: t.Dict[str, t.Any]) -> None:
        u = self.user
        h = self.harness
        self.set_user_data(u["sub"], list(u["roles"]), full_name=u["name"], email_address=u["email"])
        self.set_extra_claims(
            {
                "given_name": u["given_name"],
                "family_name": u["family_name"],
                CLAIM + "lis": {"person_sourcedid": u["sis"], "course_offering_sourcedid": "sis-CS101-2024"},
                CLAIM + "tool_platform": {
                    "guid": "workspaced-test-platform",
                    "name": "Test LMS",
                    "product_family_code": "lti1p3platform",
                },
            }
        )
        self.set_launch_context_claim(
            CONTEXT["id"], [COURSE_OFFERING], context_title=CONTEXT["title"], context_label=CONTEXT["label"]
        )
        self.set_launch_presentation_claim("iframe" if self.hint.get("embed") else "window", h.return_url)
        self.set_nrps(h.nrps_url)
        if self.hint["message"] == "resource":
            self.set_resource_link_claim(RESOURCE_LINK["id"], title=RESOURCE_LINK["title"])
        else:
            data = "dl-" + secrets.token_urlsafe(12)
            self.set_dl(
                h.deep_link_return_url,
                title="Add a workspace",
                description=f"Choose what to add to {CONTEXT['title']}",
                accept_types={"ltiResourceLink"},
            )
            assert self._deep_linking_launch_data is not None
            settings = self._deep_linking_launch_data[DL_CLAIM + "deep_linking_settings"]
            # The library offers ["iframe", "window", "embed"], accept_multiple true and `data` as an object; this
            # platform takes one link, shown in an iframe or a window, and `data` as the spec's opaque string.
            settings["accept_presentation_document_targets"] = ["iframe", "window"]
            settings["accept_multiple"] = False
            settings["data"] = data
            with h.lock:
                h.dl_data[data] = {
                    "user": u["login"],
                    "deployment_id": self._registration.get_deployment_id() if self._registration else None,
                    "time": time.time(),
                }

    def get_launch_data(self) -> t.Tuple[t.Dict[str, t.Any], str]:
        message, state = super().get_launch_data()
        if self.case == "wrong_aud":
            message["aud"] = OTHER_CLIENT_ID
            message["azp"] = OTHER_CLIENT_ID
        elif self.case == "unknown_deployment_token":
            message[CLAIM + "deployment_id"] = UNKNOWN_DEPLOYMENT
        elif self.case == "missing_claims":
            message.pop("sub", None)
            message.pop(CLAIM + "roles", None)
        elif self.case == "wrong_nonce":
            message["nonce"] = "not-" + secrets.token_urlsafe(12)
        return message, state

    def generate_launch_request(self) -> t.Any:
        login = self.user["login"]
        if self.case == "replay":
            with self.harness.lock:
                previous = self.harness.last_ok.get(login)
            if previous is None:
                raise LaunchRefused(409, f"replay: {login} has no earlier successful (case=ok) launch to replay")
            self.replayed = True
            data = dict(previous)
        else:
            data = super().generate_launch_request()
            if self.case == "ok":
                with self.harness.lock:
                    self.harness.last_ok[login] = {"id_token": data["id_token"], "state": data["state"]}
        self.claims = jwt.decode(data["id_token"], options={"verify_signature": False})
        return data

    def render_launch_form(self, launch_data: t.Dict[str, t.Any], **kwargs: t.Any) -> str:
        return auto_submit_page(launch_data["launch_url"], launch_data["id_token"], launch_data["state"])


class HarnessNrps(NamesRoleProvisioningService):
    def get_member_data_page(  # type: ignore[override]
        self, page: t.Any = 1, limit: t.Any = None, role: t.Optional[str] = None, since: t.Any = None, **_: t.Any
    ) -> TPage:
        members = []
        for u in USERS.values():
            if role and not any(r == role or r.endswith("#" + role) for r in u["roles"]):
                continue
            members.append(
                {
                    "status": "Active",
                    "user_id": u["sub"],
                    "roles": list(u["roles"]),
                    "name": u["name"],
                    "given_name": u["given_name"],
                    "family_name": u["family_name"],
                    "email": u["email"],
                    "lis_person_sourcedid": u["sis"],
                }
            )
        # Everything in one page: the library's next-page link adds 1 to the `page` query string (a str) and fails.
        return {"content": members, "has_next": False, "next": None}

    def get_context_by_id(self) -> Context:
        return Context(id=CONTEXT["id"], label=CONTEXT["label"], title=CONTEXT["title"])


# ---------------------------------------------------------------------------------------------------------------
# Checks the library leaves out.


def check_auth_request(h: Harness, q: t.Dict[str, str]) -> t.Tuple[t.List[str], t.Optional[t.Dict[str, t.Any]]]:
    problems = []
    if "openid" not in q.get("scope", "").split():
        problems.append(f"scope must include openid, got {q.get('scope')!r}")
    for name, want in (("response_type", "id_token"), ("response_mode", "form_post"), ("prompt", "none")):
        if q.get(name) != want:
            problems.append(f"{name} must be {want!r}, got {q.get(name)!r}")
    if q.get("client_id") != CLIENT_ID:
        problems.append(f"client_id must be {CLIENT_ID!r}, got {q.get('client_id')!r}")
    if q.get("redirect_uri") != h.tool_launch:
        problems.append(f"redirect_uri must be the tool's launch URL {h.tool_launch!r}, got {q.get('redirect_uri')!r}")
    for name in ("state", "nonce"):
        if not q.get(name):
            problems.append(f"{name} is missing")
    hint = h.decode_hint(q.get("lti_message_hint", ""))
    if hint is None:
        problems.append(f"lti_message_hint is not one this platform sent: {q.get('lti_message_hint')!r}")
    elif q.get("login_hint") != USERS[hint["user"]]["sub"]:
        problems.append(
            f"login_hint must be {USERS[hint['user']]['sub']!r} (as sent with this lti_message_hint), "
            f"got {q.get('login_hint')!r}"
        )
    return problems, hint


def audiences(claims: t.Dict[str, t.Any]) -> t.List[t.Any]:
    aud = claims.get("aud")
    return aud if isinstance(aud, list) else [aud]


def check_client_assertion(h: Harness, claims: t.Dict[str, t.Any]) -> t.List[str]:
    problems = []
    for name in ("iss", "sub"):
        if claims.get(name) != CLIENT_ID:
            problems.append(f"client_assertion {name} must be {CLIENT_ID!r}, got {claims.get(name)!r}")
    if not {h.token_url, h.issuer} & set(map(str, audiences(claims))):
        problems.append(f"client_assertion aud must be {h.token_url!r}, got {claims.get('aud')!r}")
    if not isinstance(claims.get("exp"), (int, float)):
        problems.append("client_assertion has no exp")
    return problems


def check_deep_linking_response(h: Harness, claims: t.Dict[str, t.Any]) -> t.List[str]:
    problems = []
    if claims.get("iss") != CLIENT_ID:
        problems.append(f"iss must be the client id {CLIENT_ID!r}, got {claims.get('iss')!r}")
    if h.issuer not in audiences(claims):
        problems.append(f"aud must be the platform issuer {h.issuer!r}, got {claims.get('aud')!r}")
    if not isinstance(claims.get("exp"), (int, float)):
        problems.append("exp is missing")
    if claims.get(CLAIM + "message_type") != "LtiDeepLinkingResponse":
        problems.append(f"message_type must be 'LtiDeepLinkingResponse', got {claims.get(CLAIM + 'message_type')!r}")
    if claims.get(CLAIM + "version") != "1.3.0":
        problems.append(f"version must be '1.3.0', got {claims.get(CLAIM + 'version')!r}")
    deployment = claims.get(CLAIM + "deployment_id")
    data = claims.get(DL_CLAIM + "data")
    with h.lock:
        issued = h.dl_data.get(data) if isinstance(data, str) else None
    if issued is None:
        problems.append(f"data {data!r} is not the data of any deep linking request this platform sent")
    elif deployment != issued["deployment_id"]:
        problems.append(f"deployment_id must be {issued['deployment_id']!r} (that of the request), got {deployment!r}")
    if deployment not in KNOWN_DEPLOYMENTS:
        problems.append(f"deployment_id {deployment!r} is not a deployment of this platform")
    items = claims.get(DL_CLAIM + "content_items")
    if not isinstance(items, list):
        problems.append("content_items is missing or not a list")
    elif len(items) > 1:
        problems.append(f"accept_multiple is false but {len(items)} content items came back")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# Pages.


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}iframe{width:100%;height:80vh;border:1px solid #999}</style>"
        f"</head><body>{body}</body></html>"
    )


def auto_submit_page(action: str, id_token: str, state: str) -> str:
    e = lambda s: html.escape(s, quote=True)  # noqa: E731
    return page(
        "Launching Workspace",
        f'<form id="lti-launch" method="post" action="{e(action)}">'
        f'<input type="hidden" name="id_token" value="{e(id_token)}">'
        f'<input type="hidden" name="state" value="{e(state)}">'
        '<p>Launching the tool&hellip;</p><button type="submit" id="lti-launch-submit">Continue</button></form>'
        "<script>document.getElementById('lti-launch').submit();</script>",
    )


def course_page(user: t.Dict[str, t.Any], login_url: str) -> str:
    return page(
        f"{CONTEXT['label']}: {RESOURCE_LINK['title']}",
        f"<header><h1>{html.escape(CONTEXT['label'])} &mdash; {html.escape(CONTEXT['title'])}</h1>"
        f"<p>Signed in to Test LMS as {html.escape(user['name'])}</p></header>"
        f"<h2>{html.escape(RESOURCE_LINK['title'])}</h2>"
        f'<iframe id="tool" title="{html.escape(RESOURCE_LINK["title"])}" src="{html.escape(login_url, quote=True)}" '
        'allow="clipboard-read *; clipboard-write *; fullscreen *" allowfullscreen></iframe>',
    )


def index_page(h: Harness) -> str:
    rows = []
    for login, u in USERS.items():
        links = " ".join(
            f'<a href="/start?{urlencode({"user": login, "message": m, "case": "ok", **({"embed": "1"} if em else {})})}">'
            f"{m}{' (embedded)' if em else ''}</a>"
            for m in MESSAGES
            for em in (False, True)
        )
        rows.append(f"<li>{html.escape(u['name'])} ({login}, {html.escape(', '.join(u['roles']))}): {links}</li>")
    return page("Test LMS", f"<h1>Test LMS</h1><p>Tool: {html.escape(h.tool)}</p><ul>{''.join(rows)}</ul>")


# ---------------------------------------------------------------------------------------------------------------
# HTTP.


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lti-test-platform/1"
    harness: Harness  # set on the class in main()

    def log_message(self, fmt: str, *args: t.Any) -> None:
        log(fmt % args)

    # --- plumbing

    def parse(self) -> t.Dict[str, t.Any]:
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        form: t.Dict[str, str] = {}
        body_json = None
        if content_type == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        elif content_type.endswith("json") and raw:
            try:
                body_json = json.loads(raw)
            except ValueError:
                body_json = None
        return {
            "method": self.command,
            "path": split.path,
            "query": query,
            "form": form,
            "json": body_json,
            "headers": self.headers,
            "content_type": content_type,
        }

    def record_request(self, req: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        def shown(fields: t.Dict[str, str]) -> t.Dict[str, str]:
            return {k: (f"<{len(v)} chars>" if k in SECRET_FIELDS else v) for k, v in fields.items()}

        headers = {}
        for name in ("Accept", "Content-Type", "Origin", "Referer", "Sec-Fetch-Site", "Sec-Fetch-Dest", "Sec-Fetch-Mode"):
            if self.headers.get(name):
                headers[name] = self.headers[name]
        if self.headers.get("Authorization"):
            scheme, _, token = self.headers["Authorization"].partition(" ")
            headers["Authorization"] = f"{scheme} <{len(token)} chars>"
        return self.harness.record(
            {
                "kind": "request",
                "method": req["method"],
                "path": req["path"],
                "query": shown(req["query"]),
                "form": shown(req["form"]),
                "headers": headers,
            }
        )

    def send(self, status: int, body: t.Union[str, bytes], content_type: str, headers: t.Optional[dict] = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_json(self, status: int, value: t.Any, content_type: str = "application/json") -> None:
        self.send(status, json.dumps(value, indent=1), content_type)

    def send_html(self, status: int, body: str) -> None:
        self.send(status, body, "text/html; charset=utf-8")

    def send_text(self, status: int, body: str) -> None:
        self.send(status, body + "\n", "text/plain; charset=utf-8")

    def do_GET(self) -> None:
        self.dispatch()

    def do_POST(self) -> None:
        self.dispatch()

    def do_HEAD(self) -> None:
        self.dispatch()

    ROUTES = {
        ("GET", "/"): "index",
        ("GET", "/start"): "start",
        ("GET", "/authorize"): "authorize",
        ("POST", "/authorize"): "authorize",
        ("GET", "/jwks"): "jwks",
        ("POST", "/token"): "token",
        ("POST", "/deep_link_return"): "deep_link_return",
        ("GET", "/return"): "lti_return",
        ("GET", "/received"): "received",
        ("GET", "/log"): "log",
    }

    def dispatch(self) -> None:
        req = self.parse()
        method = "GET" if req["method"] == "HEAD" else req["method"]
        name = self.ROUTES.get((method, req["path"]))
        if name is None and method == "GET" and req["path"].startswith("/nrps/"):
            name = "nrps"
        entry = None
        if name not in ("received", "log"):
            entry = self.record_request(req)
        try:
            if name is None:
                # Logged as a request with its status, not as a failure (browsers ask for /favicon.ico, say).
                known = any(p == req["path"] for (_, p) in self.ROUTES)
                self.send_text(405 if known else 404, "method not allowed" if known else "not found")
            else:
                getattr(self, "h_" + name)(req)
        except Exception as exc:  # noqa: BLE001 - a harness bug should show, not hang the browser
            traceback.print_exc(file=sys.stderr)
            self.harness.failure(req["path"], f"internal error: {type(exc).__name__}: {exc}")
            try:
                self.send_text(500, f"internal error: {exc}")
            except OSError:
                pass
        if entry is not None:
            entry["status"] = getattr(self, "_status", None)

    def send_response(self, code: int, message: t.Optional[str] = None) -> None:
        self._status = code
        super().send_response(code, message)

    # --- endpoints

    def h_index(self, req: t.Dict[str, t.Any]) -> None:
        self.send_html(200, index_page(self.harness))

    def h_start(self, req: t.Dict[str, t.Any]) -> None:
        h = self.harness
        q = req["query"]
        user, message, case = q.get("user", ""), q.get("message", "resource"), q.get("case", "ok")
        embed = q.get("embed", "") in ("1", "true", "yes")
        deployment = q.get("deployment", DEPLOYMENT_ID)
        problems = []
        if user not in USERS:
            problems.append(f"unknown user {user!r} (known: {', '.join(USERS)})")
        if message not in MESSAGES:
            problems.append(f"message must be one of {', '.join(MESSAGES)}, got {message!r}")
        if case not in CASES:
            problems.append(f"case must be one of {', '.join(CASES)}, got {case!r}")
        if deployment not in KNOWN_DEPLOYMENTS:
            problems.append(f"deployment must be one of {', '.join(KNOWN_DEPLOYMENTS)}, got {deployment!r}")
        if problems:
            h.failure(req["path"], "; ".join(problems))
            self.send_text(400, "; ".join(problems))
            return
        if case == "unknown_deployment":
            deployment = UNKNOWN_DEPLOYMENT
        hint = h.encode_hint(
            {"user": user, "message": message, "case": case, "embed": embed, "deployment": deployment,
             "n": secrets.token_urlsafe(6)}
        )
        platform = h.platform(deployment_id=deployment)
        login = HarnessOIDCLogin(HarnessRequest(req), platform)
        login.set_lti_message_hint(hint=hint)
        if message == "deeplink":
            login.set_deeplinking_launch_url()
        url = login.initiate_login(USERS[user]["sub"])
        if embed:
            self.send_html(200, course_page(USERS[user], url))
        else:
            self.send(302, "", "text/plain", {"Location": url})

    def h_authorize(self, req: t.Dict[str, t.Any]) -> None:
        h = self.harness
        params = req["query"] if req["method"] == "GET" else req["form"]
        problems, hint = check_auth_request(h, params)
        sign_case = hint["case"] if hint else "ok"
        deployment = hint["deployment"] if hint else DEPLOYMENT_ID
        platform = h.platform(deployment_id=deployment, sign_case=sign_case)
        request = HarnessRequest({**req, "query": params if req["method"] == "GET" else {}, "form": params})
        launch = HarnessLaunch(request, platform, hint) if hint else None
        if launch is not None:
            # The library's own check: nonce, state and redirect_uri present, client_id the registration's.
            launch._registration = platform.get_registration()  # noqa: SLF001 - as lti_launch() sets it
            try:
                launch.validate_preflight_response(launch.get_preflight_response())
            except lti_exc.PreflightRequestValidationException:
                if not problems:
                    problems.append("lti1p3platform refused the auth request (nonce, state, redirect_uri, client_id)")
        if problems:
            reason = "; ".join(problems)
            h.failure(req["path"], reason, received=params)
            self.send_html(400, page("Launch refused", f"<h1>Launch refused</h1><p>{html.escape(reason)}</p>"))
            return
        assert launch is not None and hint is not None
        try:
            form = launch.lti_launch()
        except LaunchRefused as refused:
            h.failure(req["path"], refused.reason, received=params)
            self.send_html(
                refused.status, page("Launch refused", f"<h1>Launch refused</h1><p>{html.escape(refused.reason)}</p>")
            )
            return
        h.record(
            {
                "kind": "launch",
                "user": hint["user"],
                "message": hint["message"],
                "case": hint["case"],
                "embed": hint["embed"],
                "replayed": launch.replayed,
                "state": params.get("state"),
                "nonce": params.get("nonce"),
                "redirect_uri": params.get("redirect_uri"),
                "claims": launch.claims,
            }
        )
        self.send_html(200, form)

    def h_jwks(self, req: t.Dict[str, t.Any]) -> None:
        self.send_json(200, self.harness.platform().get_jwks())

    def h_token(self, req: t.Dict[str, t.Any]) -> None:
        h = self.harness
        form = req["form"]
        platform = h.platform()

        def refuse(error: str, reason: str) -> None:
            h.failure(req["path"], f"{error}: {reason}")
            self.send_json(400, {"error": error, "error_description": reason})

        if form.get("grant_type") != "client_credentials":
            return refuse("unsupported_grant_type", f"grant_type must be client_credentials, got {form.get('grant_type')!r}")
        if form.get("client_assertion_type") != JWT_BEARER:
            return refuse("invalid_client", f"client_assertion_type must be {JWT_BEARER}")
        if not form.get("client_assertion"):
            return refuse("invalid_client", "client_assertion is missing")
        try:
            claims = platform.tool_validate_and_decode(form["client_assertion"])
        except Exception as exc:  # noqa: BLE001 - PyJWT's errors and the library's LtiException alike
            return refuse("invalid_client", f"client_assertion not verified with the tool's key set: {type(exc).__name__}: {exc}")
        problems = check_client_assertion(h, claims)
        if problems:
            return refuse("invalid_client", "; ".join(problems))
        try:
            # Checks again (with the key set it fetched above), then issues the token.
            answer = dict(platform.get_access_token({"scope": "", **form}))
        except lti_exc.MissingRequiredClaim as exc:
            return refuse("invalid_request", str(exc))
        except lti_exc.UnsupportedGrantType:
            return refuse("unsupported_grant_type", "grant_type must be client_credentials")
        except Exception as exc:  # noqa: BLE001
            return refuse("invalid_client", f"{type(exc).__name__}: {exc}")
        answer["token_type"] = "Bearer"  # the library says "bearer"; RFC 6749 treats both alike
        h.record({"kind": "token", "scope": answer["scope"], "requested": form.get("scope", "")})
        self.send_json(200, answer)

    def h_nrps(self, req: t.Dict[str, t.Any]) -> None:
        h = self.harness
        context_id = req["path"][len("/nrps/"):]
        if context_id != CONTEXT["id"]:
            h.failure(req["path"], f"no such context {context_id!r}")
            self.send_json(404, {"error": "no such context"})
            return
        service = HarnessNrps(HarnessRequest(req), h.platform(), h.nrps_url)
        try:
            resp = service.handle_resp(service.handle_get_members)
        except Exception as exc:  # noqa: BLE001 - the library lets PyJWT's and its own token errors through
            resp = None
            reason = f"Invalid LTI 1.3 authentication token: {type(exc).__name__}: {exc}"
        if resp is not None and 200 <= resp.code < 300:
            accept = self.headers.get("Accept", "")
            if NRPS_MEDIA_TYPE not in accept and "*/*" not in accept and "application/*" not in accept:
                h.record({"kind": "note", "path": req["path"], "note": f"Accept was {accept!r}, not {NRPS_MEDIA_TYPE}"})
            self.send_json(resp.code, resp.result, resp.media_type)
            return
        status = resp.code if resp is not None else 401
        if resp is not None:
            reason = resp.message
        h.failure(req["path"], reason)
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else None
        self.send(status, json.dumps({"error": reason}), "application/json", headers)

    def h_deep_link_return(self, req: t.Dict[str, t.Any]) -> None:
        h = self.harness
        form = req["form"]

        def refuse(reason: str) -> None:
            h.failure(req["path"], reason)
            self.send_html(400, page("Deep linking refused", f"<h1>Deep linking refused</h1><p>{html.escape(reason)}</p>"))

        if not form.get("JWT"):
            return refuse("form field JWT is missing")
        platform = h.platform()
        try:
            claims = platform.tool_validate_and_decode(form["JWT"])
        except Exception as exc:  # noqa: BLE001
            return refuse(f"JWT not verified with the tool's key set: {type(exc).__name__}: {exc}")
        problems = check_deep_linking_response(h, claims)
        if problems:
            return refuse("; ".join(problems))
        try:
            items = platform.validate_deeplinking_resp(form)
        except Exception as exc:  # noqa: BLE001
            return refuse(f"{type(exc).__name__}: {exc}")
        with h.lock:
            h.received.append(claims)
        h.record({"kind": "deep_link_response", "items": len(items)})
        rows = "".join(
            f"<li><span class=type>{html.escape(str(i.get('type', '')))}</span>: "
            f"<span class=title>{html.escape(str(i.get('title', '')))}</span> "
            f"<span class=url>{html.escape(str(i.get('url', '')))}</span></li>"
            for i in items
        )
        msg = claims.get(DL_CLAIM + "msg")
        extra = f"<p class=msg>{html.escape(str(msg))}</p>" if msg else ""
        self.send_html(
            200,
            page("Deep linking received", f"<h1>Deep linking received: {len(items)} item(s)</h1>{extra}<ul id=items>{rows}</ul>"),
        )

    def h_lti_return(self, req: t.Dict[str, t.Any]) -> None:
        q = req["query"]
        parts = [f"<p class={k}>{html.escape(q[k])}</p>" for k in ("lti_msg", "lti_errormsg") if q.get(k)]
        self.send_html(200, page("Back in Test LMS", "<h1>Back in Test LMS</h1>" + "".join(parts)))

    def h_received(self, req: t.Dict[str, t.Any]) -> None:
        with self.harness.lock:
            body = json.dumps(self.harness.received, indent=1)
        self.send(200, body, "application/json")

    def h_log(self, req: t.Dict[str, t.Any]) -> None:
        with self.harness.lock:
            body = json.dumps(self.harness.entries, indent=1, default=str)
        self.send(200, body, "application/json")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Server6(Server):
    address_family = socket.AF_INET6


def main() -> None:
    ap = argparse.ArgumentParser(description="Test LTI 1.3 platform for workspaced (see tests/lti/README.md)")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--tool", required=True, help="the tool's base URL, e.g. http://127.0.0.1:8080")
    args = ap.parse_args()

    # The tool is on loopback: never send its key-set requests through a proxy from the environment.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "localhost,127.0.0.1,::1"

    server = Server(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    harness = Harness(port, args.tool)
    Handler.harness = harness
    # Browsers and clients may resolve `localhost` to ::1 first; answer there too when the machine has IPv6.
    try:
        server6: t.Optional[Server] = Server6(("::1", port), Handler)
        threading.Thread(target=server6.serve_forever, daemon=True).start()
    except OSError:
        server6 = None

    sys.stdout.write(json.dumps(harness.info()) + "\n")
    sys.stdout.flush()
    log(f"listening on {harness.issuer} (127.0.0.1{' and [::1]' if server6 else ''}) for tool {harness.tool}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
