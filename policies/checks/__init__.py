"""One module per kind of rule. Each check takes (rule, context) and returns an Outcome."""
