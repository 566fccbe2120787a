"""Open the HTML report in a real headless browser and check what a reader would see.

    python scripts/check_report.py artifacts/demo/inspect/report/index.html [--width 1400]

Checks, at the given window width (default 1400 px, a laptop screen):
* no element is wider than the page (tables scroll inside their own box instead);
* every image loaded (a non-zero natural size);
* the page has no empty figure: every <img> carries data.
Prints one line per problem and exits 1 when there is any, 0 otherwise. Needs Chromium
(`apt-get install chromium`, or a `chromium`/`google-chrome` on PATH); it is a check for
people and release pipelines, not part of the test suite (which must run without a browser).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "headless_shell")
# Runs in the page after load; writes its findings into <pre id=report-check> for --dump-dom.
PROBE = """
<script>
window.addEventListener('load', () => {
  const width = document.documentElement.clientWidth;
  const problems = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('.scroll') && el.closest('.scroll') !== el) continue;  // scrolls in its box
    const r = el.getBoundingClientRect();
    if (r.right > width + 1) problems.push(`wider than the page (${Math.round(r.right)} > ${width} px): <${el.tagName.toLowerCase()}> ${(el.id || el.className || '').toString()}`);
  }
  for (const img of document.images) {
    if (!img.complete || img.naturalWidth === 0) problems.push(`image did not load: ${img.alt}`);
  }
  const out = document.createElement('pre');
  out.id = 'report-check';
  out.textContent = JSON.stringify({width: width, images: document.images.length, problems: problems});
  document.body.appendChild(out);
});
</script>
"""


def find_browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def check(page: Path, width: int, browser: str) -> dict:
    html = page.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "page.html"
        probe.write_text(html.replace("</body>", PROBE + "</body>"))
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                              f"--window-size={width},1000", "--virtual-time-budget=5000",
                              "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                             timeout=120).stdout
    found = re.search(r'<pre id="report-check">(.*?)</pre>', dom, re.S)
    if not found:
        return {"problems": ["the browser did not run the check (see --dump-dom output)"]}
    return json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("--width", type=int, default=1400)
    args = ap.parse_args()
    browser = find_browser()
    if browser is None:
        print("error: no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 2
    if not args.page.is_file():
        print(f"error: no report at {args.page}", file=sys.stderr)
        return 2
    res = check(args.page, args.width, browser)
    for p in res["problems"]:
        print(p)
    print(f"{args.page}: {res.get('images', 0)} images, {len(res['problems'])} problem(s) "
          f"at {res.get('width', args.width)} px")
    return 1 if res["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
