#!/usr/bin/env python3
"""Self-test of the test LTI platform (tests/lti/platform.py), without workspaced: this script plays a minimal tool.

It serves a tool key set (`/lti/jwks`, its own RSA key) on a loopback port, starts the harness pointing at it, and
then does by hand what a tool and a browser would: follows /start to the login initiation, sends the auth request to
/authorize, reads the auto-submit form, verifies the id_token with PyJWT against /jwks and checks the claims of each
case, gets a token from /token with a client assertion, reads /nrps/c-101, and posts deep linking responses to
/deep_link_return. Run: `scripts/lti-platform.sh --selftest` (uses the harness's virtualenv). Prints
'N passed, M failed' last and exits non-zero on any failure.
"""

from __future__ import annotations

import os
import sys

# This folder holds a file named platform.py, which would hide the standard library's `platform` module (that uuid,
# requests and others import) from every script run from here: take the folder off the import path first.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import json
import secrets
import subprocess
import threading
import time
import traceback
import typing as t
import uuid
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import jwt
import requests
from jwcrypto.jwk import JWK

os.environ["NO_PROXY"] = os.environ["no_proxy"] = "localhost,127.0.0.1,::1"

HERE = os.path.dirname(os.path.abspath(__file__))
CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
DL = "https://purl.imsglobal.org/spec/lti-dl/claim/"
NRPS_CLAIM = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"
NRPS_SCOPE = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
NRPS_MEDIA = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"
LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
INSTRUCTOR = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"
TA = "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"
SUBS = {"ada": "u-ada-7f3", "bea": "u-bea-2c9", "ina": "u-ina-5d1", "tom": "u-tom-8b4", "cy": "u-cy-1e6"}


# --- the pretend tool: a key pair and a key set server ---------------------------------------------------------


class ToolKeys:
    def __init__(self) -> None:
        self.jwk = JWK.generate(kty="RSA", size=2048, kid="tool-key-1", alg="RS256", use="sig")
        self.private = self.jwk.export_to_pem(private_key=True, password=None)
        self.other = JWK.generate(kty="RSA", size=2048).export_to_pem(private_key=True, password=None)

    def jwks(self) -> dict:
        return {"keys": [json.loads(self.jwk.export_public())]}


class ToolHandler(BaseHTTPRequestHandler):
    keys: ToolKeys
    hits: t.List[str] = []

    def log_message(self, fmt: str, *args: t.Any) -> None:
        pass

    def do_GET(self) -> None:
        ToolHandler.hits.append(self.path)
        if self.path == "/lti/jwks":
            body = json.dumps(self.keys.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b"not a real tool"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# --- helpers ----------------------------------------------------------------------------------------------------


class FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: t.List[dict] = []
        self.iframes: t.List[dict] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action"), "method": a.get("method"), "fields": {}, "buttons": 0})
        elif tag == "input" and self.forms:
            self.forms[-1]["fields"][a.get("name")] = a.get("value")
        elif tag == "button" and self.forms:
            self.forms[-1]["buttons"] += 1
        elif tag == "iframe":
            self.iframes.append(a)


def parse_html(text: str) -> FormParser:
    p = FormParser()
    p.feed(text)
    return p


class Failed(AssertionError):
    pass


def check(cond: t.Any, what: str) -> None:
    if not cond:
        raise Failed(what)


class SelfTest:
    def __init__(self) -> None:
        self.keys = ToolKeys()
        ToolHandler.keys = self.keys
        self.tool_server = ThreadingHTTPServer(("127.0.0.1", 0), ToolHandler)
        self.tool_server.daemon_threads = True
        threading.Thread(target=self.tool_server.serve_forever, daemon=True).start()
        self.tool = f"http://127.0.0.1:{self.tool_server.server_address[1]}"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "platform.py"), "--port", "0", "--tool", self.tool],
            stdout=subprocess.PIPE,
            stderr=open(os.environ.get("LTI_SELFTEST_HARNESS_LOG", os.devnull), "w"),
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.info = json.loads(line)
        self.base = self.info["base"]
        self.http = requests.Session()
        self.passed = 0
        self.failed: t.List[str] = []

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.tool_server.shutdown()

    # The tool's half of a launch, done by hand.

    def start(self, user: str, message: str = "resource", case: str = "ok", **extra: str) -> dict:
        r = self.http.get(
            f"{self.base}/start", params={"user": user, "message": message, "case": case, **extra}, allow_redirects=False
        )
        check(r.status_code == 302, f"/start answers 302, got {r.status_code} {r.text}")
        loc = urlsplit(r.headers["Location"])
        check(f"{loc.scheme}://{loc.netloc}{loc.path}" == self.tool + "/lti/login", f"redirects to the login URL: {loc}")
        return dict(parse_qsl(loc.query))

    def auth_request(self, login: dict, **override: t.Optional[str]) -> dict:
        q = {
            "scope": "openid",
            "response_type": "id_token",
            "response_mode": "form_post",
            "prompt": "none",
            "client_id": login["client_id"],
            "redirect_uri": login["target_link_uri"],
            "login_hint": login["login_hint"],
            "lti_message_hint": login["lti_message_hint"],
            "state": "st-" + secrets.token_urlsafe(8),
            "nonce": "no-" + secrets.token_urlsafe(8),
        }
        q.update(override)
        return {k: v for k, v in q.items() if v is not None}

    def authorize(self, q: dict, method: str = "GET") -> requests.Response:
        if method == "GET":
            return self.http.get(self.info["auth_url"], params=q, allow_redirects=False)
        return self.http.post(self.info["auth_url"], data=q, allow_redirects=False)

    def launch(self, user: str, message: str = "resource", case: str = "ok", **extra: str) -> t.Tuple[dict, dict, dict]:
        """Returns (auth request sent, form posted to the tool, id_token claims unverified)."""
        login = self.start(user, message, case, **extra)
        q = self.auth_request(login)
        r = self.authorize(q)
        check(r.status_code == 200, f"/authorize answers 200 for {user}/{message}/{case}, got {r.status_code}: {r.text}")
        p = parse_html(r.text)
        check(len(p.forms) == 1, "one form")
        form = p.forms[0]
        check(form["action"] == self.tool + "/lti/launch", f"form posts to the launch URL: {form['action']}")
        check(form["method"] == "post", "form method post")
        check(form["buttons"] == 1, "a visible submit button")
        check("submit()" in r.text, "the page submits itself")
        check(set(form["fields"]) == {"id_token", "state"}, f"fields id_token and state: {form['fields'].keys()}")
        claims = jwt.decode(form["fields"]["id_token"], options={"verify_signature": False})
        return q, form["fields"], claims

    def verify(self, id_token: str, nonce: t.Optional[str] = None) -> dict:
        """What a tool does: key by kid from the platform's /jwks, RS256, aud = client id, iss, exp, nonce."""
        jwks = self.http.get(self.info["jwks_url"]).json()
        kid = jwt.get_unverified_header(id_token).get("kid")
        match = [k for k in jwks["keys"] if k.get("kid") == kid]
        if not match:
            raise jwt.InvalidKeyError(f"no key with kid {kid}")
        key = jwt.PyJWK(match[0]).key
        claims = jwt.decode(
            id_token, key, algorithms=["RS256"], audience=self.info["client_id"], issuer=self.info["issuer"],
            options={"require": ["exp", "iat", "sub"]},
        )
        if nonce is not None and claims.get("nonce") != nonce:
            raise jwt.InvalidTokenError("nonce mismatch")
        return claims

    def assertion(self, key: bytes = b"", kid: str = "tool-key-1", **claims: t.Any) -> str:
        now = int(time.time())
        body = {
            "iss": self.info["client_id"],
            "sub": self.info["client_id"],
            "aud": self.info["token_url"],
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or self.keys.private, algorithm="RS256", headers={"kid": kid})

    def token(self, assertion: str, scope: str = NRPS_SCOPE, **form: str) -> requests.Response:
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
            "scope": scope,
        }
        data.update(form)
        return self.http.post(self.info["token_url"], data=data)

    def dl_response(self, request_claims: dict, key: bytes = b"", items: t.Optional[list] = None, **claims: t.Any) -> str:
        now = int(time.time())
        body = {
            "iss": self.info["client_id"],
            "aud": self.info["issuer"],
            "iat": now,
            "exp": now + 300,
            "nonce": secrets.token_urlsafe(8),
            CLAIM + "message_type": "LtiDeepLinkingResponse",
            CLAIM + "version": "1.3.0",
            CLAIM + "deployment_id": request_claims[CLAIM + "deployment_id"],
            DL + "data": request_claims[DL + "deep_linking_settings"]["data"],
            DL + "content_items": items
            if items is not None
            else [{"type": "ltiResourceLink", "title": "Python lab", "url": self.tool + "/lti/launch?w=python"}],
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or self.keys.private, algorithm="RS256", headers={"kid": "tool-key-1"})

    # --- the tests

    def t_startup_line(self) -> None:
        want = {"issuer", "client_id", "deployment_id", "auth_url", "token_url", "jwks_url", "base"}
        check(set(self.info) == want, f"keys {sorted(self.info)}")
        port = urlsplit(self.base).port
        check(self.info["issuer"] == f"http://localhost:{port}", self.info["issuer"])
        check(self.info["client_id"] == "workspaced-test" and self.info["deployment_id"] == "dep-1", "ids")
        check(self.info["auth_url"] == self.base + "/authorize", "auth_url")
        check(self.info["token_url"] == self.base + "/token", "token_url")
        check(self.info["jwks_url"] == self.base + "/jwks", "jwks_url")

    def t_jwks(self) -> None:
        keys = self.http.get(self.info["jwks_url"]).json()["keys"]
        check(len(keys) == 1, "only the good key")
        check(keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256" and keys[0].get("kid"), keys[0])
        check("d" not in keys[0], "no private part")

    def t_login_initiation(self) -> None:
        login = self.start("ada")
        check(login["iss"] == self.info["issuer"], "iss")
        check(login["login_hint"] == SUBS["ada"], "login_hint is the sub")
        check(login["target_link_uri"] == self.tool + "/lti/launch", "target_link_uri")
        check(login["client_id"] == "workspaced-test", "client_id")
        check(login["lti_deployment_id"] == "dep-1", "lti_deployment_id")
        check(login["lti_message_hint"] and "ada" not in login["lti_message_hint"].split(".")[-1], "opaque hint")
        r = self.http.get(f"{self.base}/start", params={"user": "nobody"}, allow_redirects=False)
        check(r.status_code == 400, "unknown user refused")
        r = self.http.get(f"{self.base}/start", params={"user": "ada", "case": "nope"}, allow_redirects=False)
        check(r.status_code == 400, "unknown case refused")

    def t_embed(self) -> None:
        r = self.http.get(f"{self.base}/start", params={"user": "bea", "message": "resource", "case": "ok", "embed": "1"})
        check(r.status_code == 200 and "text/html" in r.headers["Content-Type"], "an HTML course page")
        frames = parse_html(r.text).iframes
        check(len(frames) == 1 and frames[0].get("id") == "tool" and "allow" in frames[0], f"iframe#tool: {frames}")
        src = urlsplit(frames[0]["src"])
        check(f"{src.scheme}://{src.netloc}{src.path}" == self.tool + "/lti/login", "iframe src is the login URL")
        login = dict(parse_qsl(src.query))
        check(login["login_hint"] == SUBS["bea"], "login_hint")
        r = self.authorize(self.auth_request(login))
        claims = self.verify(parse_html(r.text).forms[0]["fields"]["id_token"])
        check(claims[CLAIM + "launch_presentation"]["document_target"] == "iframe", "document_target iframe")

    def t_resource_ok(self) -> None:
        q, form, _ = self.launch("ada")
        check(form["state"] == q["state"], "state echoed")
        c = self.verify(form["id_token"], nonce=q["nonce"])
        check(c["iss"] == self.info["issuer"] and c["aud"] == "workspaced-test", "iss/aud")
        check(c[CLAIM + "message_type"] == "LtiResourceLinkRequest", "message_type")
        check(c[CLAIM + "version"] == "1.3.0", "version")
        check(c[CLAIM + "deployment_id"] == "dep-1", "deployment")
        check(c[CLAIM + "target_link_uri"] == self.tool + "/lti/launch", "target_link_uri")
        check(c[CLAIM + "resource_link"] == {"id": "rl-1", "title": "Workspace"}, c[CLAIM + "resource_link"])
        check(c[CLAIM + "roles"] == [LEARNER], c[CLAIM + "roles"])
        ctx = c[CLAIM + "context"]
        check((ctx["id"], ctx["label"], ctx["title"]) == ("c-101", "CS101", "Intro to CS"), ctx)
        check(c["sub"] == SUBS["ada"] and c["name"] == "Ada Lovelace", "sub, name")
        check(c["given_name"] == "Ada" and c["family_name"] == "Lovelace" and c["email"] == "ada@example.edu", "names")
        check(c[CLAIM + "lis"]["person_sourcedid"], "lis person_sourcedid")
        lp = c[CLAIM + "launch_presentation"]
        check(lp["document_target"] == "window" and lp["return_url"] == self.base + "/return", lp)
        nrps = c[NRPS_CLAIM]
        check(nrps == {"context_memberships_url": self.base + "/nrps/c-101", "service_versions": ["2.0"]}, nrps)
        check(c["exp"] > time.time() and c["iat"] <= time.time() + 5, "fresh")
        # The same over POST.
        login = self.start("bea")
        r = self.authorize(self.auth_request(login), method="POST")
        check(r.status_code == 200, f"POST /authorize: {r.status_code}")
        self.verify(parse_html(r.text).forms[0]["fields"]["id_token"])

    def t_roles(self) -> None:
        for user, role in (("ina", INSTRUCTOR), ("tom", TA), ("bea", LEARNER)):
            _, form, _ = self.launch(user)
            c = self.verify(form["id_token"])
            check(role in c[CLAIM + "roles"] and c["sub"] == SUBS[user], f"{user}: {c[CLAIM + 'roles']}")

    def t_deployment_2(self) -> None:
        login = self.start("ada", deployment="dep-2")
        check(login["lti_deployment_id"] == "dep-2", "dep-2 in login")
        r = self.authorize(self.auth_request(login))
        c = self.verify(parse_html(r.text).forms[0]["fields"]["id_token"])
        check(c[CLAIM + "deployment_id"] == "dep-2", "dep-2 in token")

    def t_auth_request_checks(self) -> None:
        login = self.start("ada")
        bad = {
            "scope": "profile",
            "response_type": "code",
            "response_mode": "query",
            "prompt": "login",
            "client_id": "someone-else",
            "redirect_uri": self.tool + "/elsewhere",
            "login_hint": SUBS["bea"],
            "lti_message_hint": "forged",
            "state": None,
            "nonce": None,
        }
        for name, value in bad.items():
            r = self.authorize(self.auth_request(login, **{name: value}))
            check(r.status_code == 400, f"{name}={value!r} refused, got {r.status_code}")
        # A hint changed by the tool is noticed.
        hint = login["lti_message_hint"]
        r = self.authorize(self.auth_request(login, lti_message_hint=hint[:-2] + ("AA" if hint[-2:] != "AA" else "BB")))
        check(r.status_code == 400, "tampered hint refused")
        log = self.http.get(self.base + "/log").json()
        reasons = [e["reason"] for e in log if e["kind"] == "failure" and e["path"] == "/authorize"]
        check(any("redirect_uri" in x for x in reasons) and any("prompt" in x for x in reasons), reasons)

    def t_bad_signature(self) -> None:
        _, form, c = self.launch("ada", case="bad_signature")
        good_kid = self.http.get(self.info["jwks_url"]).json()["keys"][0]["kid"]
        check(jwt.get_unverified_header(form["id_token"])["kid"] == good_kid, "same kid as the good key")
        try:
            self.verify(form["id_token"])
        except jwt.InvalidSignatureError:
            pass
        else:
            raise Failed("bad_signature verified")
        check(c["sub"] == SUBS["ada"] and c["exp"] > time.time(), "otherwise a normal token")

    def t_unknown_kid(self) -> None:
        _, form, _ = self.launch("ada", case="unknown_kid")
        kids = [k["kid"] for k in self.http.get(self.info["jwks_url"]).json()["keys"]]
        kid = jwt.get_unverified_header(form["id_token"]).get("kid")
        check(kid and kid not in kids, f"kid {kid} not in {kids}")
        try:
            self.verify(form["id_token"])
        except jwt.InvalidKeyError:
            pass
        else:
            raise Failed("unknown_kid verified")

    def t_expired(self) -> None:
        _, form, c = self.launch("ada", case="expired")
        now = time.time()
        check(c["exp"] <= now - 3600 + 5 and c["iat"] <= now - 3600, f"exp {c['exp'] - now:.0f}s, iat {c['iat'] - now:.0f}s")
        try:
            self.verify(form["id_token"])
        except jwt.ExpiredSignatureError:
            pass
        else:
            raise Failed("expired verified")
        # Signature itself is good.
        jwks = self.http.get(self.info["jwks_url"]).json()
        jwt.decode(form["id_token"], jwt.PyJWK(jwks["keys"][0]).key, algorithms=["RS256"], audience="workspaced-test",
                   options={"verify_exp": False})

    def t_wrong_aud(self) -> None:
        _, form, c = self.launch("ada", case="wrong_aud")
        check(c["aud"] != "workspaced-test", c["aud"])
        try:
            self.verify(form["id_token"])
        except jwt.InvalidAudienceError:
            pass
        else:
            raise Failed("wrong_aud verified")

    def t_unknown_deployment(self) -> None:
        login = self.start("ada", case="unknown_deployment")
        check(login["lti_deployment_id"] == "dep-404", "login initiation says dep-404")
        r = self.authorize(self.auth_request(login))
        c = self.verify(parse_html(r.text).forms[0]["fields"]["id_token"])
        check(c[CLAIM + "deployment_id"] == "dep-404", "token says dep-404 (and is otherwise valid)")
        login = self.start("ada", case="unknown_deployment_token")
        check(login["lti_deployment_id"] == "dep-1", "login initiation says dep-1")
        r = self.authorize(self.auth_request(login))
        c = self.verify(parse_html(r.text).forms[0]["fields"]["id_token"])
        check(c[CLAIM + "deployment_id"] == "dep-404", "token alone says dep-404")

    def t_missing_claims(self) -> None:
        _, form, c = self.launch("ada", case="missing_claims")
        check("sub" not in c and CLAIM + "roles" not in c, "no sub, no roles")
        check(c[CLAIM + "message_type"] == "LtiResourceLinkRequest", "still a launch")
        try:
            self.verify(form["id_token"])
        except jwt.MissingRequiredClaimError:
            pass
        else:
            raise Failed("missing_claims verified with sub required")

    def t_wrong_nonce(self) -> None:
        q, form, c = self.launch("ada", case="wrong_nonce")
        check(c.get("nonce") and c["nonce"] != q["nonce"], "another nonce")
        try:
            self.verify(form["id_token"], nonce=q["nonce"])
        except jwt.InvalidTokenError:
            pass
        else:
            raise Failed("wrong_nonce verified")
        self.verify(form["id_token"])  # signature and the rest are good

    def t_replay(self) -> None:
        q1, ok, _ = self.launch("bea", case="ok")
        q2, replayed, _ = self.launch("bea", case="replay")
        check(replayed == ok, "the form posts the previous id_token and state again")
        check(replayed["state"] == q1["state"] != q2["state"], "old state, not the new one")
        # The replayed token is still a validly signed one (its nonce is the old one).
        self.verify(replayed["id_token"], nonce=q1["nonce"])
        # A user with no earlier good launch: nothing to replay.
        login = self.start("cy", case="replay")
        r = self.authorize(self.auth_request(login))
        check(r.status_code == 409, f"nothing to replay: {r.status_code}")

    def t_deep_linking(self) -> None:
        q, form, _ = self.launch("ina", message="deeplink")
        c = self.verify(form["id_token"], nonce=q["nonce"])
        check(c[CLAIM + "message_type"] == "LtiDeepLinkingRequest", "message_type")
        check(c[CLAIM + "roles"] == [INSTRUCTOR], "instructor")
        s = c[DL + "deep_linking_settings"]
        check(s["deep_link_return_url"] == self.base + "/deep_link_return", s)
        check(s["accept_types"] == ["ltiResourceLink"], s)
        check(s["accept_presentation_document_targets"] == ["iframe", "window"], s)
        check(s["accept_multiple"] is False and isinstance(s["data"], str) and s["data"], s)
        check(CLAIM + "resource_link" not in c, "no resource link in a deep linking request")
        # A good response.
        r = self.http.post(self.base + "/deep_link_return", data={"JWT": self.dl_response(c)})
        check(r.status_code == 200 and "Deep linking received: 1 item(s)" in r.text, f"{r.status_code} {r.text}")
        check("Python lab" in r.text and "ltiResourceLink" in r.text, "lists the item")
        got = self.http.get(self.base + "/received").json()
        check(len(got) == 1 and got[0][DL + "content_items"][0]["title"] == "Python lab", got)
        # Zero items is a valid answer too.
        r = self.http.post(self.base + "/deep_link_return", data={"JWT": self.dl_response(c, items=[])})
        check(r.status_code == 200 and "Deep linking received: 0 item(s)" in r.text, r.text)
        # Bad responses.
        two = [{"type": "ltiResourceLink", "title": "a", "url": "x"}, {"type": "ltiResourceLink", "title": "b", "url": "y"}]
        bad = {
            "other key": self.dl_response(c, key=self.keys.other),
            "wrong aud": self.dl_response(c, aud="http://elsewhere"),
            "wrong iss": self.dl_response(c, iss="someone"),
            "wrong data": self.dl_response(c, **{DL + "data": "forged"}),
            "no data": self.dl_response(c, **{DL + "data": None}),
            "wrong deployment": self.dl_response(c, **{CLAIM + "deployment_id": "dep-2"}),
            "wrong type": self.dl_response(c, **{CLAIM + "message_type": "LtiResourceLinkRequest"}),
            "wrong version": self.dl_response(c, **{CLAIM + "version": "1.1"}),
            "expired": self.dl_response(c, exp=int(time.time()) - 60),
            "two items": self.dl_response(c, items=two),
            "html item": self.dl_response(c, items=[{"type": "html", "html": "<p>hi</p>"}]),
        }
        for what, token in bad.items():
            r = self.http.post(self.base + "/deep_link_return", data={"JWT": token})
            check(r.status_code == 400, f"{what}: refused, got {r.status_code} {r.text[:200]}")
        check(len(self.http.get(self.base + "/received").json()) == 2, "only the good ones recorded")

    def t_token_and_nrps(self) -> None:
        r = self.token(self.assertion())
        check(r.status_code == 200, f"token: {r.status_code} {r.text}")
        tok = r.json()
        check(tok["token_type"] == "Bearer" and tok["expires_in"] == 3600 and tok["scope"] == NRPS_SCOPE, tok)
        check(set(tok) == {"access_token", "token_type", "expires_in", "scope"}, tok)
        # aud = the issuer is accepted too, and aud as a list.
        check(self.token(self.assertion(aud=self.info["issuer"])).status_code == 200, "aud issuer")
        check(self.token(self.assertion(aud=[self.info["token_url"]])).status_code == 200, "aud list")
        bad = {
            "other key": self.assertion(key=self.keys.other),
            "unknown kid": self.assertion(key=self.keys.other, kid="nope"),
            "wrong iss": self.assertion(iss="someone"),
            "wrong sub": self.assertion(sub="someone"),
            "wrong aud": self.assertion(aud="http://elsewhere/token"),
            "expired": self.assertion(exp=int(time.time()) - 60, iat=int(time.time()) - 400),
            "no exp": self.assertion(exp=None),
            "garbage": "not.a.jwt",
        }
        for what, a in bad.items():
            r = self.token(a)
            check(r.status_code == 400 and r.json()["error"] == "invalid_client", f"{what}: {r.status_code} {r.text}")
        r = self.token(self.assertion(), client_assertion_type="password")
        check(r.status_code == 400 and r.json()["error"] == "invalid_client", f"assertion type: {r.text}")
        r = self.token(self.assertion(), grant_type="password")
        check(r.status_code == 400 and r.json()["error"] == "unsupported_grant_type", f"grant type: {r.text}")
        # NRPS with the token.
        url = self.base + "/nrps/c-101"
        r = self.http.get(url, headers={"Authorization": "Bearer " + tok["access_token"], "Accept": NRPS_MEDIA})
        check(r.status_code == 200 and r.headers["Content-Type"] == NRPS_MEDIA, f"nrps: {r.status_code} {r.text}")
        m = r.json()
        check(m["id"] == url and m["context"] == {"id": "c-101", "label": "CS101", "title": "Intro to CS"}, m)
        members = {x["user_id"]: x for x in m["members"]}
        check(set(members) == set(SUBS.values()), sorted(members))
        ada = members[SUBS["ada"]]
        check(ada["status"] == "Active" and ada["roles"] == [LEARNER] and ada["name"] == "Ada Lovelace", ada)
        check(ada["email"] == "ada@example.edu", ada)
        check(TA in members[SUBS["tom"]]["roles"] and members[SUBS["ina"]]["roles"] == [INSTRUCTOR], "roles")
        r = self.http.get(url, params={"role": LEARNER}, headers={"Authorization": "Bearer " + tok["access_token"]})
        check(r.status_code == 200 and len(r.json()["members"]) == 3, f"role filter: {r.text[:200]}")
        for what, headers in {
            "no token": {},
            "garbage token": {"Authorization": "Bearer abc.def.ghi"},
            "not bearer": {"Authorization": "Basic " + tok["access_token"]},
            "foreign token": {"Authorization": "Bearer " + self.assertion()},
        }.items():
            r = self.http.get(url, headers={**headers, "Accept": NRPS_MEDIA})
            check(r.status_code == 401, f"{what}: {r.status_code} {r.text}")
        # A token without the NRPS scope does not read members.
        r = self.token(self.assertion(), scope="https://purl.imsglobal.org/spec/lti-ags/scope/score")
        check(r.status_code == 200, r.text)
        r = self.http.get(url, headers={"Authorization": "Bearer " + r.json()["access_token"]})
        check(r.status_code == 401, f"wrong scope: {r.status_code}")
        r = self.http.get(self.base + "/nrps/c-999", headers={"Authorization": "Bearer " + tok["access_token"]})
        check(r.status_code == 404, "other context")

    def t_log(self) -> None:
        log = self.http.get(self.base + "/log").json()
        kinds = {e["kind"] for e in log}
        check({"request", "failure", "launch", "token", "deep_link_response"} <= kinds, kinds)
        auth = [e for e in log if e["kind"] == "request" and e["path"] == "/authorize"]
        check(auth and "nonce" in (auth[-1]["query"] or auth[-1]["form"]), "auth requests logged with their fields")
        tokens = [e for e in log if e["kind"] == "request" and e["path"] == "/token"]
        check(all(e["form"].get("client_assertion", "").startswith("<") for e in tokens), "assertions not logged")
        check(all(e.get("status") for e in log if e["kind"] == "request"), "each request has its status")
        check(not any(e.get("path") in ("/log", "/received") for e in log), "reads of /log and /received not logged")
        check(any(p == "/lti/jwks" for p in ToolHandler.hits), "the harness fetched the tool's key set")

    def run(self) -> int:
        tests = [n for n in dir(self) if n.startswith("t_")]
        order = sorted(tests, key=lambda n: getattr(SelfTest, n).__code__.co_firstlineno)
        for name in order:
            try:
                getattr(self, name)()
            except Exception as exc:  # noqa: BLE001
                self.failed.append(name)
                print(f"FAIL {name}: {type(exc).__name__}: {exc}")
                if not isinstance(exc, Failed):
                    traceback.print_exc()
            else:
                self.passed += 1
                print(f"ok   {name}")
        print(f"selftest: {self.passed} passed, {len(self.failed)} failed")
        return 1 if self.failed else 0


def main() -> None:
    st = SelfTest()
    try:
        code = st.run()
    finally:
        st.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
