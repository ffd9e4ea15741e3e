"""Controller process: ``python -m fabriclab.controllers.run --topology FILE --port PORT
--ready-file FILE [--log FILE]``.

Runs os-ken with :class:`fabriclab.controllers.ecmp_app.EcmpApp`, listening for OpenFlow on
127.0.0.1:PORT only.  Exits 0 on SIGTERM or SIGINT, 1 if os-ken fails (e.g. the port is
taken), 2 on bad arguments, an unreadable topology or a bad GSE setting.

GSE, from the environment (inherited by the process):

``FABRICLAB_GSE``
    ``central``: the leaves get the container path flows and punt REQUESTs to the
    controller, and :class:`fabriclab.controllers.gsos_app.GsosApp` (GSOS) is loaded too;
    ``egress``: the container path flows only; unset or empty: no GSE at all.
``FABRICLAB_GSE_PLACEMENT``
    ``nic`` (unset or empty too): the GSPs are in the host agents; ``leaf`` (``central``
    only): a GSP daemon beside each leaf, on the port after the leaf's last model port,
    which the leaves' flows and GSOS's grants then use.
``FABRICLAB_EMU_SCALE``
    emulated rate / topology rate (float, default 1.0): GSOS schedules at the emulated
    rates, the topology's rates times this.
``FABRICLAB_GSE_MTU``, ``FABRICLAB_GSE_HEADER``
    payload and header bytes per packet GSOS counts on the wire (defaults 1000 and 58).
``FABRICLAB_GSOS_STATS``
    JSON file GSOS rewrites (atomically) every second and at a clean exit:
    ``{"requests", "grants", "granted_bytes", ...}``.

Faults (see :class:`fabriclab.controllers.ecmp_app.Rerouter`):

``FABRICLAB_DETECT_S``
    set: reroute around links whose ports go down, this many real seconds after the
    port-status (``routing.detect_us`` x the time dilation); unset: static routes.
``FABRICLAB_RECONVERGE``, ``FABRICLAB_ON_NO_PATH``
    ``routing.reconverge`` (fabric | local) and ``routing.on_no_path`` (drop | bounce).
``FABRICLAB_EVENTS_FILE``
    JSON lines, one per reroute, for the orchestrator.

Commands from the orchestrator come one JSON object a line on stdin and go to every app
with an ``on_command`` hook (e.g. ``{"cmd": "link_degrade", "link": "l0-s1",
"fraction": 0.5}`` for GSOS).

os-ken 4.x has no ``osken-manager`` any more; this is its equivalent done programmatically:
os-ken's oslo.config options are parsed from an empty argv (so our argv never reaches it)
and the listen address is then set with overrides.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .routing import (ENV_GSE, ENV_GSE_PLACEMENT, ENV_READY_FILE, ENV_TOPOLOGY,
                      check_gse_mode, check_gse_placement, load_topology)

LISTEN_HOST = "127.0.0.1"
APP_MODULE = "fabriclab.controllers.ecmp_app"
GSOS_APP_MODULE = "fabriclab.controllers.gsos_app"

LOG = logging.getLogger("fabriclab.controllers.run")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fabriclab.controllers.run",
                                description="fabriclab ECMP OpenFlow 1.3 controller (os-ken)")
    p.add_argument("--topology", required=True, type=Path,
                   help="JSON file holding Topology.to_dict()")
    p.add_argument("--port", required=True, type=int,
                   help="OpenFlow TCP port to listen on (on 127.0.0.1)")
    p.add_argument("--ready-file", required=True, type=Path,
                   help="JSON-lines file, one line per switch once its tables are installed")
    p.add_argument("--log", type=Path, help="log file (default: stderr)")
    p.add_argument("--verbose", action="store_true", help="log os-ken debug messages")
    args = p.parse_args(argv)
    # Port 0 would make os-ken fall back to its defaults, 6653 *and* the legacy 6633.
    if not 0 < args.port < 65536:
        p.error(f"--port must be in 1..65535, not {args.port}")
    return args


def _setup_logging(log: Path | None, verbose: bool) -> None:
    handler = logging.FileHandler(log) if log else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _exit(code: int) -> None:
    """Leave now.  os-ken's native hub runs the OpenFlow server and every connection on
    non-daemon threads blocked in socket calls and offers no way to stop them (``hub.kill``
    is a no-op), so a normal interpreter exit would hang; the ready file is written
    unbuffered and synced per line, and switches keep their flows when the connection
    drops (fail-mode secure), so nothing is lost by skipping the interpreter's teardown."""
    logging.shutdown()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _setup_logging(args.log, args.verbose)
    try:
        topo = load_topology(args.topology)
        args.ready_file.parent.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        LOG.error("cannot use topology %s / ready file %s: %s", args.topology,
                  args.ready_file, e)
        return 2
    try:
        gse = check_gse_mode(os.environ.get(ENV_GSE))
        placement = check_gse_placement(os.environ.get(ENV_GSE_PLACEMENT), gse)
        if gse == "central":
            from .gsos import config_from_env, make_gsos
            make_gsos(topo, **config_from_env(os.environ))  # fails here, not inside os-ken
    except ValueError as e:
        LOG.error("bad GSE setting: %s", e)
        return 2
    apps = [APP_MODULE] + ([GSOS_APP_MODULE] if gse == "central" else [])
    os.environ[ENV_TOPOLOGY] = str(args.topology.resolve())
    os.environ[ENV_READY_FILE] = str(args.ready_file.resolve())
    # The hub type is read once, when os_ken.lib.hub is first imported: force plain threads
    # (os-ken's default) rather than eventlet, which would need monkey-patching we don't do.
    os.environ["OSKEN_HUB_TYPE"] = "native"

    stop = []

    def on_signal(signum, _frame):
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    from os_ken.lib import hub
    if not hasattr(hub, "HubThread"):  # os-ken releases before the threading hub
        LOG.error("this os-ken has no native (threading) hub; fabriclab needs os-ken >= 4.2")
        return 2

    # In this order: os-ken's modules import each other circularly, and importing
    # os_ken.controller.controller first fails.
    from os_ken import cfg
    from os_ken.base import app_manager
    import os_ken.controller.controller  # noqa: F401  registers the ofp_* options

    # An empty argv and no config files: os-ken must neither parse our arguments nor pick up
    # an /etc/os_ken/os_ken.conf lying around.
    cfg.CONF(args=[], project="os_ken", default_config_files=[], default_config_dirs=[])
    cfg.CONF.set_override("ofp_listen_host", LISTEN_HOST)
    cfg.CONF.set_override("ofp_tcp_listen_port", args.port)
    cfg.CONF.set_override("ofp_ssl_listen_port", None)
    cfg.CONF.set_override("ofp_switch_address_list", [])

    LOG.info("starting os-ken on %s:%d for %s (%d switches), GSE %s", LISTEN_HOST, args.port,
             topo.description, len(topo.switches),
             f"{gse} (GSPs in the {placement})" if gse else "off")
    try:
        mgr = app_manager.AppManager.get_instance()
        mgr.load_apps(apps)
        services = mgr.instantiate_apps(**mgr.create_contexts())
    except Exception:
        LOG.exception("os-ken failed to start")
        _exit(1)

    # Commands from the orchestrator, one JSON object a line on stdin (e.g. a link degraded:
    # see GsosApp.on_command), go to every app that has an on_command hook.
    def read_commands():
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except ValueError:
                LOG.warning("ignoring a command that is not JSON: %r", line[:200])
                continue
            for app in list(mgr.applications.values()):
                hook = getattr(app, "on_command", None)
                if hook is not None:
                    try:
                        hook(cmd)
                    except Exception:
                        LOG.exception("%s: command %s failed", app.name, cmd)

    if not sys.stdin.isatty():
        threading.Thread(target=read_commands, name="commands", daemon=True).start()

    # Polling with sleep keeps the signal handler trivial (no locks taken in it).
    while not stop:
        if not all(t.is_alive() for t in services):
            LOG.error("os-ken's OpenFlow server stopped (port %d in use?); exiting",
                      args.port)
            _exit(1)
        time.sleep(0.2)
    LOG.info("stopping on %s", signal.Signals(stop[0]).name)
    # Apps with something to flush (GSOS's stats) get a word before the hard exit.
    for app in list(mgr.applications.values()):
        hook = getattr(app, "on_exit", None)
        if hook is not None:
            try:
                hook()
            except Exception:
                LOG.exception("%s: on_exit failed", app.name)
    _exit(0)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
