// Yamux receive-window updates at half the window, as the reference implementation (hashicorp's)
// sends them. @chainsafe/libp2p-yamux 8 answers every data frame it receives with a window update
// frame, so every control message costs a second frame back: one more encryption, socket write
// and wake-up on each side. Steps of a chain waited ~1 ms per message for it, and a bulk transfer
// sent one update per frame.
// Skipping an update is safe when the stream is established and more than half its window is
// still free: the sender then has at least that much room left and will get an update before it
// runs out. Any other case (opening flags to send, a resumed stream, half the window used) goes
// to the library as before, which also keeps its window auto-tuning.
// The patched method is public API of the package's `./stream` export; the version is pinned by
// the lockfile, and test/src/net/yamux-window.test.ts checks the behaviour the patch relies on.

import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'

interface WindowFields { state: StreamState, recvWindow: number, recvWindowCapacity: number }

const proto = YamuxStream.prototype as unknown as { sendWindowUpdate: (this: WindowFields) => void, pipemeshHalfWindow?: true }

if (proto.pipemeshHalfWindow !== true) {
  const sendWindowUpdate = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: WindowFields): void {
    if (this.state === StreamState.Established && this.recvWindowCapacity > this.recvWindow / 2) return
    sendWindowUpdate.call(this)
  }
  proto.pipemeshHalfWindow = true
}
