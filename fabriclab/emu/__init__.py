"""Emulation of fabrics in Mininet with Open vSwitch (userspace datapath)."""
