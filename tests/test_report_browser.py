"""The run report as a person sees it: report.html opened in headless Chromium (Debian's
package, driven by Playwright) shows real tables and every picture, and no Markdown markup."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's closed network needs: no background connections, no sandbox as root.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def _refine(agent: Path, expert: Path, method: str, run_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "ultrarl", "refine", "Hopper-v5", "--agent", str(agent),
                           "--method", method, "--expert", str(expert), "--timesteps", "2048", "--episodes", "2",
                           "--eval-episodes", "2", "--save-frames", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def test_run_report_renders_tables_curves_and_pictures_in_chromium(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from ultrarl.pipeline import pretrain
    from ultrarl.report.run_report import write_run_report
    from ultrarl.settings import PretrainSettings

    agent, expert = tmp_path / "agent.zip", tmp_path / "expert.zip"
    for seed, path in enumerate((agent, expert)):
        pretrain(PretrainSettings(env_id="Hopper-v5", timesteps=2048, seed=seed, out=str(path)), progress_bar=False)
    _refine(agent, expert, "ppo", tmp_path / "ppo")
    _refine(agent, expert, "oracle", tmp_path / "oracle")
    write_run_report(tmp_path / "oracle", baseline=tmp_path / "ppo")  # as a bench does, with the baseline's curve
    frames = sorted((tmp_path / "oracle" / "frames").glob("*.png"))
    assert frames, "--save-frames made the pictures"

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((tmp_path / "oracle" / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
        tables = page.eval_on_selector_all("table", "els => els.map(e => e.rows.length)")
        headers = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        text = page.inner_text("body")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    print(f"screenshot: {tmp_path / 'report.png'}")
    assert len(images) == len(frames) + 1  # the learning curve and every critical state's picture
    assert all(complete and width > 0 for _, complete, width in images), images
    assert "learning curve" in [alt for alt, *_ in images]
    assert len(tables) >= 2 and min(tables) >= 2  # true returns, critical states: header and rows
    assert {"True return (no guidance)", "Critical states", "Learning curve"} <= set(headers)
    for marker in ("|---", "| ---", "![", "**", "\n- ", "\n# ", "\n## "):
        assert marker not in text, f"raw Markdown {marker!r} on the page"
