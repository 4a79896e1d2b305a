"""The processes, standard library only.

Launch protocol, fork server, monitor, PID 1 set-up, exec, export, terminal.
"""
