"""NLG evaluation: graders, samples files and the flow shared by the eval/ command lines."""
