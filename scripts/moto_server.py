"""moto_server for the test suite and the benchmarks, with one race of moto's SQS mended.

moto 5.2.5's `Queue.delete_message` rebuilds the queue's message list without holding the lock
that `Queue.add_message` appends under, so a message sent while another is being deleted can
vanish (the rebuilt list is assigned over the append). Real SQS loses nothing there; under the
hub's concurrent senders the emulator dropped about one task in a few thousand, which then
looked like a lost delivery. Deleting under the same lock closes it; everything else is moto's
own server, with the same command line.
"""

import sys

from moto.server import main
from moto.sqs.models import Queue

_delete_message = Queue.delete_message


def _delete_message_locked(self, receipt_handle):
    with self._messages_lock:  # a threading.Condition over an RLock: add_message's lock
        return _delete_message(self, receipt_handle)


Queue.delete_message = _delete_message_locked

if __name__ == "__main__":
    sys.exit(main())
