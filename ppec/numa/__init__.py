"""NUMA topology and fitting: which host CPUs and memory a VM gets. Pure library.

    >>> from ppec.numa import Topology, Request, fit, from_capabilities
    >>> topo = from_capabilities(open("caps.xml").read(), reserved=frozenset({0, 1}))
    >>> result = fit(topo, allocations=[], request=Request(vcpus=4, memory_mib=8192))

``fit`` returns a ``Plan`` (vCPU -> host CPU, guest cell -> host cell, memory per cell) or a
``NoFit`` whose reasons say, per node, what was missing. Nothing here imports libvirt.
"""

from ppec.numa.fit import Allocation, GuestCell, NoFit, Plan, Request, fit
from ppec.numa.topology import Cell, Cpu, Topology, from_capabilities, from_sysfs, single_node

__all__ = ["Allocation", "Cell", "Cpu", "GuestCell", "NoFit", "Plan", "Request", "Topology",
           "fit", "from_capabilities", "from_sysfs", "single_node"]
