"""Render a page in headless Chromium (Debian's ``chromium``, installed by scripts/setup.sh) with no network:
the browser runs in a network namespace of its own holding only a loopback interface."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

# Appended to a copy of the page: once it has loaded, what the browser made of its pictures, as JSON in the DOM.
_PROBE = """<script>window.addEventListener("load", () => {
  const images = [...document.images];
  const probe = document.createElement("pre");
  probe.id = "vidvec-probe";
  probe.textContent = JSON.stringify({
    images: images.length,
    loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    widths: images.map(i => i.naturalWidth),
    polylines: [...document.querySelectorAll("svg polyline")].map(p => p.points.numberOfItems),
    text: document.body.innerText});
  document.body.appendChild(probe);
});</script>"""


def render(page: Path, scratch: Path) -> dict:
    """Load ``page`` in headless Chromium and return what it shows: how many images, how many of them loaded
    (decoded, non-zero width), their widths, the points of each SVG polyline and the page's text."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: run scripts/setup.sh"
    probed = scratch / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    done = subprocess.run(["unshare", "-n", chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={scratch / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                           probed.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="vidvec-probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium did not render the page (exit {done.returncode}): {done.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(found.group(1)))
