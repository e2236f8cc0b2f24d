"""The README keeps its word: each example of "Your own logic", pasted over the handler it names
(as a student does), prints under --demo what the README says it prints, within 30 s."""

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
# An example is marked for this test by a comment the rendered README does not show:
# <!-- example: replaces on_trade, prints "block: " -->, then its code block.
EXAMPLES = re.findall(r'<!-- example: replaces (\w+), prints "([^"]+)" -->\s*```python\n(.*?)```', README, re.S)
MY_BOT = ROOT / "tests" / "test_my_bot.py"


def paste(script: Path, handler: str, example: str) -> None:
    """Paste an example over the handler it names in a copy of the script, as a student does."""
    text = script.read_text(encoding="utf-8")
    # The handler's definition, up to the next line that starts at the margin.
    definition = re.compile(rf"^async def {handler}\(.*?(?=^\S)", re.S | re.M)
    assert definition.search(text), f"websocket_stream.py has no handler {handler}"
    script.write_text(definition.sub(lambda _: example + "\n\n", text, count=1), encoding="utf-8")


def test_the_readme_has_examples_for_async_and_blocking_slow_work():
    assert len(EXAMPLES) >= 3
    code = "\n".join(example for _, _, example in EXAMPLES)
    assert "asyncio.to_thread(" in code and "in_background(" in code


@pytest.mark.skipif(sys.platform == "win32", reason="stops the demo with SIGINT")
@pytest.mark.parametrize(("handler", "prints", "example"), EXAMPLES,
                         ids=[f"example {n + 1}" for n in range(len(EXAMPLES))])
def test_an_example_pasted_over_its_handler_prints_under_demo_within_30_s(handler, prints, example, start_script):
    demo = start_script("--demo", edit=lambda script: paste(script, handler, example),
                        env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    demo.wait_for(lambda: any(line.startswith(prints) for line in demo.out_lines), timeout=30,
                  what=f"a line starting {prints!r}")
    assert demo.stop(signal.SIGINT)[0] == 0
    assert "Traceback" not in demo.stderr and "warning" not in demo.stderr, demo.stderr


def test_test_my_bot_tests_the_readmes_vwap_example_word_for_word():
    vwap = [example for _, prints, example in EXAMPLES if prints == "block: "]
    assert len(vwap) == 1 and vwap[0] in MY_BOT.read_text(encoding="utf-8")


PASTED = [("", ""), *((handler, example) for handler, _, example in EXAMPLES)]  # ("", ""): none


@pytest.mark.parametrize(("handler", "example"), PASTED,
                         ids=["as shipped", *(f"example {n + 1} pasted" for n in range(len(EXAMPLES)))])
def test_test_my_bot_passes_as_shipped_and_with_each_example_pasted(handler, example, tmp_path):
    for name in ("websocket_stream.py", "local_alpaca_server.py", "pyproject.toml",
                 "tests/conftest.py", "tests/test_my_bot.py", "tests/data/session.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    if example:
        paste(tmp_path / "websocket_stream.py", handler, example)
    pytest_my_bot = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_my_bot.py"]
    done = subprocess.run(pytest_my_bot, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
