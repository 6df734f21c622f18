"""Interchange with other toolkits: the deployed integer graph as NIR and back (layer above simulate)."""
