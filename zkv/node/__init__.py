"""zkv-node: one package, one job per module.

core (the socket-free state machine) · transport (ZeroMQ, the loop) · stores (the engines on
disk) · op (the operation contract) · coordinator + quorum (client requests) · replica (the
engine) · handoff (hints for absent owners) · membership (gossip, validation, failure
detection, cluster.json) · antientropy (Merkle exchange, reaping) · background (scheduling of
handoff, exchanges, repair) · latency (per-peer soft timeouts) · status, metrics, health,
hotkeys (what the node reports) · seal (the contexts given to clients, and taken back) ·
namespaces (the namespace registry).
"""
