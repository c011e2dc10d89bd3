"""The Faust app and the command line: topics, agents, HTTP views, local broker, replay, demo."""
