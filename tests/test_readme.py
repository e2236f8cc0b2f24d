"""The README keeps its word: each example of "Your own logic", pasted over the handler it names
(as a student does), prints under --demo what the README says it prints, within 30 s."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest
from conftest import ROOT, script_env

README = (ROOT / "README.md").read_text(encoding="utf-8")
# An example is marked for this test by a comment the rendered README does not show:
# <!-- example: replaces on_trade, prints "block: " -->, then its code block.
EXAMPLES = re.findall(r'<!-- example: replaces (\w+), prints "([^"]+)" -->\s*```python\n(.*?)```', README, re.S)


def test_the_readme_has_examples_for_async_and_blocking_slow_work():
    assert len(EXAMPLES) >= 3
    code = "\n".join(example for _, _, example in EXAMPLES)
    assert "asyncio.to_thread(" in code and "in_background(" in code


@pytest.mark.skipif(sys.platform == "win32", reason="stops the demo with SIGINT")
@pytest.mark.parametrize(("handler", "prints", "example"), EXAMPLES,
                         ids=[f"example {n + 1}" for n in range(len(EXAMPLES))])
def test_an_example_pasted_over_its_handler_prints_under_demo_within_30_s(handler, prints, example, start_script):
    def paste(script: Path) -> None:
        text = script.read_text(encoding="utf-8")
        # The handler's definition, up to the next line that starts at the margin.
        definition = re.compile(rf"^async def {handler}\(.*?(?=^\S)", re.S | re.M)
        assert definition.search(text), f"websocket_stream.py has no handler {handler}"
        script.write_text(definition.sub(lambda _: example + "\n\n", text, count=1), encoding="utf-8")

    demo = start_script("--demo", edit=paste, env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    demo.wait_for(lambda: any(line.startswith(prints) for line in demo.out_lines), timeout=30,
                  what=f"a line starting {prints!r}")
    assert demo.stop(signal.SIGINT)[0] == 0
    assert "Traceback" not in demo.stderr and "warning" not in demo.stderr, demo.stderr
