from attnlab.app import entry

entry()
