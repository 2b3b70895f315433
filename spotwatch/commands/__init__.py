"""Front ends, one ``<name>_cmd`` module per subcommand: argument parsing only, no
heavy imports. The suffix keeps each apart from the module that does the work
(``ship_cmd`` parses ``spotwatch ship``; ``spotwatch.ship`` ships)."""
