"""A small HTTP client for the admin listener tests: cookies kept, redirects not followed."""

from __future__ import annotations

import html
import http.client
import re
import uuid
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    text: str

    def field(self, name: str) -> str:
        """The value of a hidden input (the CSRF token)."""
        match = re.search(rf'name="{name}" value="([^"]*)"', self.text)
        assert match, f"no field {name} in page"
        return match.group(1)

    def hidden_fields(self, form_action: str) -> list[tuple[str, str]]:
        """The hidden inputs of the form that posts to `form_action` (repeated names kept), as a
        browser would send them."""
        match = re.search(rf'<form method="post" action="{re.escape(form_action)}">(.*?)</form>', self.text, re.S)
        assert match, f"no form posting to {form_action} in page"
        found = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', match.group(1))
        return [(name, html.unescape(value)) for name, value in found]


@dataclass
class Client:
    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Page:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            sent = dict(headers or {})
            if self.cookies:
                sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            for value in response.headers.get_all("Set-Cookie") or []:
                jar = SimpleCookie(value)
                for name, morsel in jar.items():
                    if (morsel["expires"] and "1970" in morsel["expires"]) or morsel.value == "":
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = morsel.value
            return Page(response.status, {k.lower(): v for k, v in response.getheaders()}, text)
        finally:
            conn.close()

    def get(self, path: str) -> Page:
        return self.request("GET", path)

    def post(self, path: str, data: dict[str, str] | list[tuple[str, str]],
             headers: dict[str, str] | None = None) -> Page:
        return self.request("POST", path, urlencode(data).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})

    def post_multipart(self, path: str, data: dict[str, str], files: dict[str, tuple[str, bytes]]) -> Page:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in data.items()]
        for name, (filename, content) in files.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                         f"Content-Type: message/rfc822\r\n\r\n".encode() + content + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def sign_in(self, login: str, password: str) -> Page:
        return self.post("/login", {"login": login, "password": password, "next": "/holds"})
