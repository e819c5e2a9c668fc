"""The flows, one package each, named like its function folder (functions/<name>) and template logical id."""
