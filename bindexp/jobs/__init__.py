"""One module per job (its settings, its run function, its figures), each named once in
`registry.JOBS`. The framework they share is `bindexp.runs`."""
