"""The command line: a thin typer shell that parses, calls one library function, renders, exits."""
