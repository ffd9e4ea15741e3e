"""The SDN controller for the Mininet engine: an os-ken OpenFlow 1.3 app doing static L3
forwarding with per-flow ECMP (SELECT groups).

``routing`` computes the per-switch tables (pure, no os-ken); ``ecmp_app`` installs them;
``run`` is the process entry (``python -m fabriclab.controllers.run``).  Only ``routing`` is
imported here, so importing the package never pulls in os-ken (whose hub type is fixed at
first import, see ``run``).
"""

from .routing import (ENV_READY_FILE, ENV_TOPOLOGY, Group, Route, SwitchTable, load_topology,
                      read_ready_file, switch_table, switch_tables)

__all__ = ["switch_tables", "switch_table", "SwitchTable", "Group", "Route", "load_topology",
           "read_ready_file", "ENV_TOPOLOGY", "ENV_READY_FILE"]
