"""The README keeps its word: each example of "Your own logic", pasted over the handlers it
names (as a student does), prints what the README says it prints, within 30 s."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, script_env

README = (ROOT / "README.md").read_text(encoding="utf-8")
# An example is marked for this test by a comment the rendered README does not show, then its
# code block: <!-- example: replaces on_trade, prints "block: " -->. One that builds on the
# example before it says so: <!-- example: replaces on_cancel, with the one above, prints ... -->
EXAMPLES = [(handlers.split(), bool(above), prints, code) for handlers, above, prints, code in re.findall(
    r'<!-- example: replaces ([\w ]+?), (with the one above, )?prints "([^"]+)" -->\s*```python\n(.*?)```',
    README, re.S)]
MY_BOT = ROOT / "tests" / "test_my_bot.py"


def paste(script: Path, handlers: list[str], example: str) -> None:
    """Paste an example over the handlers it names in a copy of the script, as a student does:
    in place of the first, the others deleted."""
    text = script.read_text(encoding="utf-8")
    for n, handler in enumerate(handlers):
        # The handler's definition, up to the next line that starts at the margin.
        definition = re.search(rf"^async def {handler}\(.*?(?=^\S)", text, re.S | re.M)
        assert definition, f"websocket_stream.py has no handler {handler}"
        text = text[:definition.start()] + (example + "\n\n" if n == 0 else "") + text[definition.end():]
    script.write_text(text, encoding="utf-8")


def pasted_with_what_it_needs(number: int) -> list[tuple[list[str], str]]:
    """Example `number` and, if it builds on the one before it, that one first (and so on)."""
    handlers, above, _, code = EXAMPLES[number]
    return [*(pasted_with_what_it_needs(number - 1) if above else []), (handlers, code)]


def test_the_readme_has_examples_for_async_and_blocking_slow_work_and_for_corrections():
    assert len(EXAMPLES) >= 4
    code = "\n".join(example for *_, example in EXAMPLES)
    assert "asyncio.to_thread(" in code and "in_background(" in code
    assert {"on_trade", "on_correction", "on_cancel"} <= {handler for handlers, *_ in EXAMPLES for handler in handlers}


@pytest.mark.skipif(sys.platform == "win32", reason="stops the script with SIGINT")
@pytest.mark.parametrize("number", range(len(EXAMPLES)), ids=[f"example {n + 1}" for n in range(len(EXAMPLES))])
def test_an_example_pasted_over_its_handlers_prints_within_30_s(number, make_server, start_script):
    handlers, _, prints, _ = EXAMPLES[number]

    def edit(script: Path) -> None:
        for names, code in pasted_with_what_it_needs(number):
            paste(script, names, code)

    if {"on_correction", "on_cancel"} & set(handlers):
        # The demo sends one of them every 12 s or so, at random: a local server sends them on cue.
        server = make_server(rate=50, seed=3)
        script = start_script("--url", server.url, edit=edit)
        script.wait_for_stderr("subscribed to trades")
        server.cue("correction", "cancel")
    else:  # as the README says: under --demo, which sends a block at least every 5 s
        script = start_script("--demo", edit=edit, env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    script.wait_for(lambda: any(line.startswith(prints) for line in script.out_lines), timeout=30,
                    what=f"a line starting {prints!r}")
    assert script.stop(signal.SIGINT)[0] == 0
    assert "Traceback" not in script.stderr and "warning" not in script.stderr, script.stderr


def test_test_my_bot_tests_the_readmes_vwap_examples_word_for_word():
    vwap = [code for handlers, _, _, code in EXAMPLES if {"on_trade", "on_correction"} & set(handlers)
            and "turnover" in code]
    assert len(vwap) == 2 and all(code in MY_BOT.read_text(encoding="utf-8") for code in vwap)


PASTED = [[], *(pasted_with_what_it_needs(number) for number in range(len(EXAMPLES)))]  # []: none


@pytest.mark.parametrize("pastes", PASTED,
                         ids=["as shipped", *(f"example {n + 1} pasted" for n in range(len(EXAMPLES)))])
def test_test_my_bot_passes_as_shipped_and_with_each_example_pasted(pastes, tmp_path):
    for name in ("websocket_stream.py", "local_alpaca_server.py", "pyproject.toml",
                 "tests/conftest.py", "tests/test_my_bot.py", "tests/data/session.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    for handlers, code in pastes:
        paste(tmp_path / "websocket_stream.py", handlers, code)
    pytest_my_bot = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_my_bot.py"]
    done = subprocess.run(pytest_my_bot, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

