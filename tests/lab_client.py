"""Run a shell command in a JupyterLab terminal, or code in a kernel, of a signed-in user's
server, over Jupyter Server's REST API and websockets, as the browser does."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import requests
from websockets.sync.client import ClientConnection, connect

END = "__lab_client_done__"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")  # colours, titles, modes


class LabClient:
    """The server at ``{hub}/user/{name}/`` through `session` (a hub login)."""

    def __init__(self, hub_url: str, name: str, session: requests.Session) -> None:
        self.base = f"{hub_url}/user/{name}/"
        self.session = session
        session.get(self.base + "lab", timeout=60)  # sets the server's _xsrf cookie
        self.xsrf = session.cookies.get("_xsrf", path=f"/user/{name}/") or ""

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        answer = self.session.post(
            self.base + path, json=body, headers={"X-XSRFToken": self.xsrf}, timeout=60
        )
        answer.raise_for_status()
        return answer.json()

    def _socket(self, path: str) -> ClientConnection:
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.session.cookies)
        url = self.base.replace("http", "ws", 1) + path
        return connect(url, additional_headers={"Cookie": cookies}, open_timeout=60)

    def terminal(self, command: str, timeout_s: float = 60) -> str:
        """What `command` prints in a new terminal (bash as the server's user), after the
        prompt and the command as typed; terminal escape codes removed."""
        name = self._post("api/terminals", {})["name"]
        output = ""
        try:
            with self._socket(f"terminals/websocket/{name}") as socket:
                socket.send(json.dumps(["stdin", f"{command}; echo {END[:9]}''{END[9:]}\r"]))
                deadline = time.monotonic() + timeout_s
                while END not in output and time.monotonic() < deadline:
                    kind, *payload = json.loads(socket.recv(timeout=timeout_s))
                    if kind == "stdout":
                        output += payload[0]
        finally:
            self.session.delete(
                self.base + f"api/terminals/{name}", headers={"X-XSRFToken": self.xsrf}
            )
        assert END in output, f"the terminal did not finish {command!r}: {output[-2000:]}"
        # The typed line, echoed, holds END split by '' ; only echo's output holds it whole.
        return ANSI.sub("", output[: output.rindex(END)]).replace("\r", "")

    def kernel(self, code: str, timeout_s: float = 120) -> str:
        """What `code` prints (stdout, stderr and any error) in a new kernel of the default
        kind; the kernel's name first, on a line of its own."""
        kernel = self._post("api/kernels", {})
        session_id = uuid.uuid4().hex
        request_id = uuid.uuid4().hex
        request = {
            "header": {
                "msg_id": request_id, "msg_type": "execute_request", "username": "test",
                "session": session_id, "date": "", "version": "5.3",
            },
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {
                "code": code, "silent": False, "store_history": False,
                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True,
            },
        }  # fmt: skip
        lines = [kernel["name"]]
        try:
            with self._socket(f"api/kernels/{kernel['id']}/channels?session_id={session_id}") as ws:
                ws.send(json.dumps(request))
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline:
                    message = json.loads(ws.recv(timeout=timeout_s))
                    if message.get("parent_header", {}).get("msg_id") != request_id:
                        continue
                    kind, content = message["msg_type"], message["content"]
                    if kind == "stream":
                        lines.append(content["text"])
                    elif kind == "error":
                        lines.append(f"{content['ename']}: {content['evalue']}")
                    elif kind == "status" and content["execution_state"] == "idle":
                        break
        finally:
            self.session.delete(
                self.base + f"api/kernels/{kernel['id']}", headers={"X-XSRFToken": self.xsrf}
            )
        return "\n".join(lines)
