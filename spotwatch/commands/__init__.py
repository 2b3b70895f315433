"""Front ends, one module per subcommand: argument parsing only, no heavy imports."""
