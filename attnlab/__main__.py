from attnlab.run.app import entry

entry()
