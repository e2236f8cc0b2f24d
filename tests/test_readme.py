"""The README and the pages of docs/ keep their word: each example of a handler, pasted over the
handlers it names (as a student does), prints what the page says it prints, within 30 s; the
README's test of the VWAP example and its script of the protocol by hand run as shown; every
command line of the script written in them runs as written; each page is linked, and each link
leads somewhere."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
from itertools import takewhile
from pathlib import Path

import pytest
from conftest import POSIX_ONLY, ROOT, ServerThread, ctrl_c_at_import, script_env

from alpaca_stream.options import parse_args, settings_from

README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
# The README's examples first, then docs/handlers.md's and the others', as a student reads them.
EXAMPLE_TEXT = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
# An example is marked for this test by a comment the rendered README does not show, then its
# code block: <!-- example: replaces on_trade, prints "block: " -->. One that builds on the
# example before it says so: <!-- example: replaces on_cancel, with the one above, prints ... -->;
# one that runs with other options than --demo alone says which: runs with --demo --trades, ...
# What an example imports is a block of its own before it, marked <!-- example imports, ... -->,
# its lines indented as they go: with the script's own imports, in their try (see paste()).
MARKED = re.findall(r'(?:<!-- example imports, for the example below -->\s*```python\n(.*?)```.*?)?'
                    r'<!-- example: replaces ([\w ]+?), (with the one above, )?(?:runs with ([^,]+), )?'
                    r'prints "([^"]+)" -->\s*```python\n(.*?)```', EXAMPLE_TEXT, re.S)
EXAMPLES = [(handlers.split(), bool(above), prints, imports + code)
            for imports, handlers, above, _, prints, code in MARKED]
RUNS_WITH = [options or "--demo" for *_, options, _, _ in MARKED]  # each example's command line
MY_BOT = ROOT / "tests" / "test_my_bot.py"


def paste(script: Path, handlers: list[str], example: str) -> None:
    """Paste an example over the handlers it names in a copy of the script, as a student does:
    in place of the first, the others deleted; its imports (its first lines, indented) at the end
    of the script's, in the try that makes Ctrl+C while they load exit quietly."""
    imports = "".join(takewhile(lambda line: line.startswith("    "), example.splitlines(keepends=True)))
    example = example[len(imports):]
    text = script.read_text(encoding="utf-8")
    text = text.replace("\nexcept ModuleNotFoundError", "\n" + imports + "except ModuleNotFoundError", 1)
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
    # The lesson's own: the VWAP strategy and its corrections, in the README itself.
    vwap = [code for *_, code in EXAMPLES if "turnover" in code]
    assert len(vwap) == 2 and all(code in README for code in vwap)
    code = "\n".join(example for *_, example in EXAMPLES)
    assert "asyncio.to_thread(" in code and "in_background(" in code
    assert IMPORTING, "the order example imports alpaca-py's MarketOrderRequest"
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


def test_no_example_imports_among_the_handlers_outside_the_scripts_try():
    # An import pasted at the margin loads outside the try: Ctrl+C then prints a traceback.
    at_the_margin = [line for *_, code in EXAMPLES for line in code.splitlines()
                     if line.startswith(("import ", "from "))]
    assert at_the_margin == []


# The examples that import something, and the first module each imports.
IMPORTING = [(number, code.split()[1])  # "    from alpaca.trading.requests import ..."
             for number, (*_, code) in enumerate(EXAMPLES) if code.startswith(" ")]


@POSIX_ONLY
@pytest.mark.parametrize(("number", "module"), IMPORTING, ids=[f"example {n + 1}" for n, _ in IMPORTING])
def test_ctrl_c_while_an_examples_import_loads_exits_130_without_a_traceback(number, module, start_script,
                                                                          tmp_path):
    # Before, the order example's import stood among the handlers, outside the script's try: Ctrl+C
    # while alpaca-py's trading models (and pandas) loaded printed a traceback, and the exit was -2.

    def edit(script: Path) -> None:
        for names, code in pasted_with_what_it_needs(number):
            paste(script, names, code)

    script = start_script("--demo", edit=edit, env=ctrl_c_at_import(module, tmp_path))
    assert script.finish() == 130
    assert script.err_lines == [] and script.out_lines == [], script.stderr


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


def copy_project(folder: Path) -> None:
    """What a student's own test needs of the project, in a folder of its own."""
    for name in ("websocket_stream.py", "pyproject.toml",
                 "tests/conftest.py", "tests/test_my_bot.py", "tests/data/session.jsonl"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, folder / name)


def pytest_in(folder: Path, test_file: str) -> subprocess.CompletedProcess:
    """python -m pytest on one file of the folder, as the README says to run it, within 60 s."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=60)


# As shipped, tests/test_my_bot.py runs in this suite: here, with each example pasted.
PASTED = [pasted_with_what_it_needs(number) for number in range(len(EXAMPLES))]


@pytest.mark.parametrize("pastes", PASTED, ids=[f"example {n + 1} pasted" for n in range(len(EXAMPLES))])
def test_test_my_bot_passes_with_each_example_pasted(pastes, tmp_path):
    copy_project(tmp_path)
    for handlers, code in pastes:
        paste(tmp_path / "websocket_stream.py", handlers, code)
    done = pytest_in(tmp_path, "tests/test_my_bot.py")
    assert done.returncode == 0, done.stdout + done.stderr


def test_test_my_bot_passes_with_the_strategy_imported_in_place_of_its_copy_as_it_says(tmp_path):
    copy_project(tmp_path)
    vwap = next(number for number, (handlers, *_) in enumerate(EXAMPLES) if "on_cancel" in handlers)
    for handlers, code in pasted_with_what_it_needs(vwap):
        paste(tmp_path / "websocket_stream.py", handlers, code)
    my_bot = tmp_path / "tests" / "test_my_bot.py"
    text = my_bot.read_text(encoding="utf-8")
    imported = re.search(r"^ +(from websocket_stream import .*)$", text, re.M)[1]  # as its docstring says
    copy = text[text.index("volume: dict[str, int] = {}"):text.index("# -- its tests")]
    my_bot.write_text(text.replace(copy, imported + "\n\n\n"), encoding="utf-8")
    done = pytest_in(tmp_path, "tests/test_my_bot.py")
    assert done.returncode == 0, done.stdout + done.stderr


# The README's own test of the VWAP example, as a student saves it beside the pasted strategy.
TEST_OF_MINE = re.search(r"<!-- pytest example: .*?saved as (\S+) -->\s*```python\n(.*?)```", README, re.S)


def test_the_readmes_test_of_the_vwap_example_runs_as_shown_with_the_example_pasted(tmp_path):
    assert TEST_OF_MINE, "the README shows a test of the VWAP example"
    saved_as, code = TEST_OF_MINE.groups()
    copy_project(tmp_path)
    vwap = next(number for number, (handlers, *_) in enumerate(EXAMPLES) if handlers == ["on_trade"])
    paste(tmp_path / "websocket_stream.py", *pasted_with_what_it_needs(vwap)[0])
    (tmp_path / saved_as).write_text(code, encoding="utf-8")
    done = pytest_in(tmp_path, saved_as)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


# "How it works": the protocol by hand, a script of the README's, against the local server.
BY_HAND = re.search(r"<!-- raw example: .*? -->\s*```python\n(.*?)```", README, re.S)


def test_the_readmes_script_of_the_protocol_authenticates_subscribes_and_gets_trades(server, tmp_path):
    assert BY_HAND, "the README shows the protocol by hand"
    code = BY_HAND.group(1)
    assert 'URL = "ws://127.0.0.1:8765/v2/iex"' in code  # the local server run alone, by default
    assert len(code.splitlines()) <= 40 and max(map(len, code.splitlines())) <= 79
    (tmp_path / "raw_stream.py").write_text(code.replace("ws://127.0.0.1:8765/v2/iex", server.url),
                                            encoding="utf-8")
    done = subprocess.run([sys.executable, "raw_stream.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    said = done.stdout
    assert "{'T': 'success', 'msg': 'connected'}" in said
    assert "{'T': 'success', 'msg': 'authenticated'}" in said
    assert "'T': 'subscription'" in said and "'trades': ['SPY']" in said
    assert "{'T': 't'," in said and "'S': 'SPY'" in said
    assert max(map(len, said.splitlines())) <= 80
    assert [connection.subscriptions.get("trades") for connection in server.connections] == [["SPY"]]


# -- every command line of the script, as written ------------------------------------------------


def command_lines() -> dict[str, list[str]]:
    """Every `python websocket_stream.py ...` of the README and docs/, in a code block or inline:
    its text, as written, and its arguments (a comment and a redirection to a file cut off), each
    once."""
    commands: dict[str, list[str]] = {}
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        blocks = re.findall(r"^```\w*\n(.*?)^```", text, re.S | re.M)
        lines = [line for block in blocks for line in block.splitlines()]
        lines += re.findall(r"`(python websocket_stream\.py[^`]*)`", text)
        for line in lines:
            if line.startswith("python websocket_stream.py"):
                words = shlex.split(line, comments=True)[2:]
                cut = next((at for at, word in enumerate(words) if word in (">", "|")), len(words))
                commands.setdefault(" ".join(line.split("#")[0].split()), words[:cut])
    return commands


COMMANDS = command_lines()


def as_params(commands: list[str]) -> list:
    return [pytest.param(command, id=command.removeprefix("python websocket_stream.py").strip() or "(none)")
            for command in commands]


def test_the_pages_write_many_commands_of_the_script():
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("command", as_params(list(COMMANDS)))
def test_every_command_of_the_readme_and_docs_is_taken_by_the_scripts_options(command, capsys):
    # In this process: the options the script would read, checked as it checks them before it
    # connects (a usage error exits 2 there), with no keys and no network needed.
    try:
        settings_from(parse_args(COMMANDS[command]))
    except SystemExit as exit:
        assert exit.code == 0 and "--help" in COMMANDS[command], capsys.readouterr().err


def test_docs_options_names_every_option_of_the_help(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", capsys.readouterr().out)) - {"--help", "--verbose"}
    listed = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")  # -v for --verbose
    assert sorted(option for option in named if f"`{option}" not in listed and f"{option} " not in listed) == []


# Those that need no keys and no network, run for real; the others would connect to Alpaca.
OFFLINE = [command for command, words in COMMANDS.items()
           if ("--demo" in words or "--replay" in words or words == ["--help"]) and "--serve" not in words]


@pytest.mark.skipif(sys.platform == "win32", reason="stops the script with SIGINT")
@pytest.mark.parametrize("command", as_params(OFFLINE))
def test_every_command_that_needs_no_keys_runs_as_written(command, start_script, copy_script):
    words = COMMANDS[command]
    if "--replay" in words:  # the README's recording, made as it says: from --demo --json
        shutil.copy(ROOT / "tests" / "data" / "session.jsonl", copy_script() / "session.jsonl")
    script = start_script(*words, env=script_env(APCA_API_KEY_ID=None, APCA_API_SECRET_KEY=None))
    if "--demo" in words:  # it runs until Ctrl+C
        script.wait_for_lines(1, timeout=30)
        status = script.stop(signal.SIGINT)[0]
    else:
        status = script.finish(timeout=30)
    assert status == 0, script.stderr
    assert script.out_lines and "Traceback" not in script.stderr


# -- the pages of docs/, and the links ----------------------------------------------------------


def test_the_readme_keeps_to_the_lessons_path_in_under_300_lines():
    # Install, run, edit a handler, test it, replay it, deploy it; the reference is in docs/.
    assert len(README.splitlines()) < 300


def test_every_page_of_docs_is_linked_from_the_readmes_where_to_go_next():
    where_next = README[README.index("## Where to go next"):]
    where_next = where_next[:where_next.find("\n## ", 1) if "\n## " in where_next[1:] else None]
    assert DOCS, "docs/ has pages"
    for page in DOCS:
        assert f"](docs/{page.name})" in where_next, page.name


def anchor(title: str) -> str:
    """GitHub's anchor for a title: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
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
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for said in ("CI here", "these machines", "These machines", "this project is built on", "on this machine",
                     "tried here"):
            assert said not in text, f"{page.name}: {said!r}"
