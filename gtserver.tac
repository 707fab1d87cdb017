"""Run gtserver with ``twistd -ny gtserver.tac``.

Edit ARGUMENTS to configure it: they are the very options of
``twistd gtserver`` (see ``twistd gtserver --help``).
"""

import shlex

from twisted.application import service

from gtserver.tap import Options, makeService

ARGUMENTS = shlex.split("--db sqlite:gtserver.sqlite")

options = Options()
options.parseOptions(ARGUMENTS)
application = service.Application("gtserver")
makeService(options).setServiceParent(application)
