"""The SDN controller for the Mininet engine: an os-ken OpenFlow 1.3 app doing static L3
forwarding with per-flow ECMP (SELECT groups), plus, for GSE, container path flows and
GSOS (the central scheduler).

``routing`` computes the per-switch tables (pure, no os-ken); ``ecmp_app`` installs them;
``gsos`` sets GSE's central scheduler (:mod:`fabriclab.cc_algorithms.gsos`) up for a
topology and builds its frames (pure), and ``gsos_app`` serves it over OpenFlow
(``FABRICLAB_GSE=central``); ``run`` is the process entry
(``python -m fabriclab.controllers.run``).  Only ``routing`` is imported here, so importing
the package never pulls in os-ken (whose hub type is fixed at first import, see ``run``).
"""

from .routing import (ENV_GSE, ENV_READY_FILE, ENV_TOPOLOGY, Group, PathRule, Route,
                      SwitchTable, host_port_rates, load_topology,
                      switch_table, switch_tables, transit_paths)

__all__ = ["switch_tables", "switch_table", "SwitchTable", "Group", "Route", "PathRule",
           "load_topology", "transit_paths", "host_port_rates",
           "ENV_TOPOLOGY", "ENV_READY_FILE", "ENV_GSE"]
