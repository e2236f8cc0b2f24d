"""The README and the pages of docs/ keep their word: each example of "Your own logic", pasted
over the handlers it names (as a student does), prints what the README says it prints, within
30 s; each page is linked, and each link leads somewhere."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, ServerThread, script_env

README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = sorted((ROOT / "docs").glob("*.md"))
# An example is marked for this test by a comment the rendered README does not show, then its
# code block: <!-- example: replaces on_trade, prints "block: " -->. One that builds on the
# example before it says so: <!-- example: replaces on_cancel, with the one above, prints ... -->;
# one that runs with other options than --demo alone says which: runs with --demo --trades, ...
MARKED = re.findall(r'<!-- example: replaces ([\w ]+?), (with the one above, )?(?:runs with ([^,]+), )?'
                    r'prints "([^"]+)" -->\s*```python\n(.*?)```', README, re.S)
EXAMPLES = [(handlers.split(), bool(above), prints, code) for handlers, above, _, prints, code in MARKED]
RUNS_WITH = [options or "--demo" for _, _, options, _, _ in MARKED]  # each example's command line
MY_BOT = ROOT / "tests" / "test_my_bot.py"


def paste(script: Path, handlers: list[str], example: str) -> None:
    """Paste an example over the handlers it names in a copy of the script, as a student does:
    in place of the first, the others deleted."""
    text = script.read_text(encoding="utf-8")
    # Each handler's definition, up to the next line that starts at the margin, found before
    # any is replaced: the example may define the others (on_cancel beside on_correction).
    definitions = []
    for handler in handlers:
        definition = re.search(rf"^async def {handler}\(.*?(?=^\S)", text, re.S | re.M)
        assert definition, f"websocket_stream.py has no handler {handler}"
        definitions.append((definition.start(), definition.end(), handler == handlers[0]))
    pieces, at = [], 0
    for start, end, first in sorted(definitions):
        pieces += [text[at:start], example + "\n\n" if first else ""]
        at = end
    script.write_text("".join(pieces) + text[at:], encoding="utf-8")


def pasted_with_what_it_needs(number: int) -> list[tuple[list[str], str]]:
    """Example `number` and, if it builds on the one before it, that one first (and so on)."""
    handlers, above, _, code = EXAMPLES[number]
    return [*(pasted_with_what_it_needs(number - 1) if above else []), (handlers, code)]


def test_the_readme_has_examples_for_async_and_blocking_slow_work_and_for_corrections():
    assert len(EXAMPLES) >= 4
    code = "\n".join(example for *_, example in EXAMPLES)
    assert "asyncio.to_thread(" in code and "in_background(" in code
    assert {"on_trade", "on_correction", "on_cancel"} <= {handler for handlers, *_ in EXAMPLES for handler in handlers}


def test_every_example_fits_the_students_file_of_79_columns():
    # Pasted, an example's lines are the script's, which tests/test_layout.py holds to 79.
    too_wide = [line for *_, code in EXAMPLES for line in code.splitlines() if len(line) > 79]
    assert too_wide == []


@pytest.mark.skipif(sys.platform == "win32", reason="stops the script with SIGINT")
@pytest.mark.parametrize("number", range(len(EXAMPLES)), ids=[f"example {n + 1}" for n in range(len(EXAMPLES))])
def test_an_example_pasted_over_its_handlers_prints_within_30_s(number, make_server, start_script):
    handlers, _, prints, _ = EXAMPLES[number]

    def edit(script: Path) -> None:
        for names, code in pasted_with_what_it_needs(number):
            paste(script, names, code)

    if {"on_correction", "on_cancel"} & set(handlers):
        # The demo sent 14 in 120 s, at random, up to 16.5 s apart: a local server sends them on cue.
        server = make_server(rate=50, seed=3)
        script = start_script("--url", server.url, edit=edit)
        script.wait_for_stderr("subscribed to trades")
        server.cue("correction", "cancel")
    else:  # as the README says: under --demo, which sends a block at least every 5 s
        script = start_script(*RUNS_WITH[number].split(), edit=edit,
                              env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    script.wait_for(lambda: any(line.startswith(prints) for line in script.out_lines), timeout=30,
                    what=f"a line starting {prints!r}")
    assert script.stop(signal.SIGINT)[0] == 0
    assert "Traceback" not in script.stderr and "warning" not in script.stderr, script.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="stops the script with SIGINT")
@pytest.mark.parametrize("fed_by", ["the test's local server", "a server the fixtures did not make"])
def test_a_test_run_of_the_script_with_the_order_example_pasted_orders_at_a_local_broker_never_alpacas(
        fed_by, make_server, made_servers, start_script):
    # As the printout's tests run the script: --url of a local server, no --trading-url. Before,
    # its orders went to Alpaca's paper API, and the suite needed the network.
    number = next(number for number, (*_, code) in enumerate(EXAMPLES) if "submit_order" in code)
    server = make_server(rate=50, seed=3) if fed_by == "the test's local server" else ServerThread(rate=50, seed=3)

    def edit(script: Path) -> None:
        for names, code in pasted_with_what_it_needs(number):
            paste(script, names, code)

    def placed() -> list[tuple[str, str]]:  # at a local server's broker: the first one the test made
        orders = made_servers[0].server.account.orders.values() if made_servers else []
        return [(order["symbol"], order["qty"]) for order in orders]

    try:
        script = start_script("--url", server.url, edit=edit)
        script.wait_for_stderr("subscribed to trades")
        server.cue("block")
        script.wait_for(lambda: "orders go to" in script.said and (placed() or "in_background() failed" in script.said),
                        what="the order")
        assert script.stop(signal.SIGINT)[0] == 0
    finally:
        if server not in made_servers:
            server.close()
    assert placed() == [(script.out_lines[0].split()[2], "1")], script.stderr  # "buying 1 SPY after a block of ..."
    assert re.search(r"orders go to http://127\.0\.0\.1:\d+", script.said) and "warning" not in script.stderr


def test_test_my_bot_tests_the_readmes_vwap_examples_word_for_word():
    vwap = [code for handlers, _, _, code in EXAMPLES if {"on_trade", "on_correction"} & set(handlers)
            and "turnover" in code]
    assert len(vwap) == 2 and all(code in MY_BOT.read_text(encoding="utf-8") for code in vwap)


# As shipped, tests/test_my_bot.py runs in this suite: here, with each example pasted.
PASTED = [pasted_with_what_it_needs(number) for number in range(len(EXAMPLES))]


@pytest.mark.parametrize("pastes", PASTED, ids=[f"example {n + 1} pasted" for n in range(len(EXAMPLES))])
def test_test_my_bot_passes_with_each_example_pasted(pastes, tmp_path):
    for name in ("websocket_stream.py", "pyproject.toml",
                 "tests/conftest.py", "tests/test_my_bot.py", "tests/data/session.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    for handlers, code in pastes:
        paste(tmp_path / "websocket_stream.py", handlers, code)
    pytest_my_bot = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_my_bot.py"]
    done = subprocess.run(pytest_my_bot, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_test_my_bot_passes_with_the_strategy_imported_in_place_of_its_copy_as_it_says(tmp_path):
    for name in ("websocket_stream.py", "pyproject.toml",
                 "tests/conftest.py", "tests/test_my_bot.py", "tests/data/session.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    vwap = next(number for number, (handlers, *_) in enumerate(EXAMPLES) if "on_cancel" in handlers)
    for handlers, code in pasted_with_what_it_needs(vwap):
        paste(tmp_path / "websocket_stream.py", handlers, code)
    my_bot = tmp_path / "tests" / "test_my_bot.py"
    text = my_bot.read_text(encoding="utf-8")
    imported = re.search(r"^ +(from websocket_stream import .*)$", text, re.M)[1]  # as its docstring says
    copy = text[text.index("volume: dict[str, int] = {}"):text.index("# -- its tests")]
    my_bot.write_text(text.replace(copy, imported + "\n\n\n"), encoding="utf-8")
    pytest_my_bot = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_my_bot.py"]
    done = subprocess.run(pytest_my_bot, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the pages of docs/, and the links ----------------------------------------------------------


def test_every_page_of_docs_is_linked_from_the_readmes_where_to_go_next():
    where_next = README[README.index("## Where to go next"):]
    where_next = where_next[:where_next.find("\n## ", 1) if "\n## " in where_next[1:] else None]
    assert DOCS, "docs/ has pages"
    for page in DOCS:
        assert f"](docs/{page.name})" in where_next, page.name


def anchor(title: str) -> str:
    """GitHub's anchor for a title: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", [ROOT / "README.md", *DOCS], ids=lambda page: page.name)
def test_every_link_of_the_readme_and_docs_leads_to_a_file_and_a_title_there(page):
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"https?://", target):
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if fragment:
            titles = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.M)
            assert fragment in {anchor(title) for title in titles}, f"{page.name}: {target}"


def test_the_readme_speaks_of_the_users_machine_never_of_ours():
    for page in [ROOT / "README.md", *DOCS]:
        text = page.read_text(encoding="utf-8")
        for said in ("CI here", "these machines", "These machines", "this project is built on", "on this machine",
                     "tried here"):
            assert said not in text, f"{page.name}: {said!r}"
