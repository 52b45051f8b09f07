"""A headless Chromium for the UI tests: found on PATH, installed where the test setup can, or a skip.

`chromium_or_reason()` answers with the browser's path, or with the reason there is none.
When no chromium is on PATH and this process is root with apt-get, it installs Debian's
`chromium` (apt-get update first only if the install fails); every failure there is a reason
to skip, never an error.

`hidden_headers(page, names)` reads the layout the way a user sees it, without scrolling: a
header cell counts as visible when its whole box lies inside the viewport and inside every
ancestor that clips its overflow (the metadata table scrolls sideways inside the page), and
the element hit at its centre is the cell itself (nothing drawn over it).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

APT_TIMEOUT_S = 300
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def _apt_get(*args: str) -> tuple[bool, str]:
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=60", *args]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"`{' '.join(command)}` did not finish: {error}"
    tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
    return result.returncode == 0, f"`{' '.join(command)}` exited {result.returncode}: {tail[0]}"


@functools.cache
def chromium_or_reason() -> tuple[str | None, str]:
    """(path, "") when a Chromium can be run, else (None, why not). Installs it at most once a session."""
    if path := find_chromium():
        return path, ""
    missing = "no chromium or chromium-browser on PATH"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, f"{missing}, and the test setup installs Debian's chromium only as root"
    if shutil.which("apt-get") is None:
        return None, f"{missing}, and apt-get is not available to install it"
    installed, outcome = _apt_get("install", "-y", "chromium")
    if not installed:
        updated, update_outcome = _apt_get("update")
        if not updated:
            return None, f"{missing}; installing it failed ({outcome}), and so did {update_outcome}"
        installed, outcome = _apt_get("install", "-y", "chromium")
    if installed and (path := find_chromium()):
        return path, ""
    return None, f"{missing}; installing Debian's chromium failed: {outcome}"


HIDDEN_HEADERS_JS = """
(names) => {
  const vw = window.innerWidth, vh = window.innerHeight;
  const headers = [...document.querySelectorAll('th')];
  const problems = {};
  for (const name of names) {
    const th = headers.find((cell) => cell.innerText.trim() === name);
    if (!th) { problems[name] = 'no such column header on the page'; continue; }
    const box = th.getBoundingClientRect();
    let clip = {left: 0, top: 0, right: vw, bottom: vh};
    for (let el = th.parentElement; el && el !== document.documentElement; el = el.parentElement) {
      const style = getComputedStyle(el);
      if (el.scrollTop || el.scrollLeft) { problems[name] = `${el.className} is scrolled`; break; }
      if (style.overflowX === 'visible' && style.overflowY === 'visible') continue;
      const r = el.getBoundingClientRect();
      clip = {left: Math.max(clip.left, r.left), top: Math.max(clip.top, r.top),
              right: Math.min(clip.right, r.right), bottom: Math.min(clip.bottom, r.bottom)};
    }
    if (problems[name]) continue;
    const fmt = (r) => `x ${r.left.toFixed(0)}-${r.right.toFixed(0)}, y ${r.top.toFixed(0)}-${r.bottom.toFixed(0)}`;
    if (box.left < clip.left - 0.5 || box.right > clip.right + 0.5 || box.top < clip.top - 0.5 ||
        box.bottom > clip.bottom + 0.5) {
      problems[name] = `header cell at ${fmt(box)}, visible area ${fmt(clip)}`;
      continue;
    }
    const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    if (!hit || !th.contains(hit)) problems[name] = `covered by ${hit ? hit.tagName + '.' + hit.className : 'nothing'}`;
  }
  if (window.scrollX || window.scrollY) problems['(window)'] = 'the window is scrolled';
  return problems;
}
"""


def hidden_headers(page, names: list[str]) -> dict[str, str]:
    """Of the table header cells named, those a user cannot see whole without scrolling, with why."""
    return page.evaluate(HIDDEN_HEADERS_JS, names)


def header_boxes(page, names: list[str]) -> list[dict | None]:
    return page.evaluate(
        "(names) => names.map((n) => { const th = [...document.querySelectorAll('th')]"
        ".find((c) => c.innerText.trim() === n); if (!th) return null; const r = th.getBoundingClientRect();"
        " return {x: r.x, y: r.y, width: r.width, height: r.height}; })",
        names,
    )


def open_settled(page, url: str, names: list[str], timeout_s: float = 90) -> None:
    """Open `url` and wait until every named header is drawn, the fonts are in and the layout stopped moving."""
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
    for name in names:
        page.get_by_role("columnheader", name=name, exact=True).first.wait_for(state="visible", timeout=timeout_s * 1000)
    page.evaluate("document.fonts.ready.then(() => true)")
    previous = None
    for _ in range(int(timeout_s * 2)):
        boxes = header_boxes(page, names)
        if boxes == previous:
            return
        previous = boxes
        page.wait_for_timeout(500)
