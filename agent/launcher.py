#!/usr/bin/env python3
# The step launcher, Python edition: the same job and protocol as launcher.ts, used in its place
# wherever python3 >= 3.8 is found (see launcher-client.ts), because it starts a process about four
# times cheaper. Node 20's libuv forks on Linux: a fork copies the page tables of the whole
# launcher and every write it makes afterwards faults, ~3.5 ms of CPU per `true` here, where
# Python's subprocess (vfork) costs ~1 ms, exec of the step included.
#
# Protocol: Node's IPC channel in 'json' mode on the fd named by NODE_CHANNEL_FD, one JSON message
# per line each way. Requests and events are LauncherRequest and LauncherEvent in launcher.ts,
# except that a 'data' event carries its bytes base64-encoded in `data64`. The first event is
# {"type": "ready"}: the agent falls back to the Node launcher when it never comes.
#
# Standard library only; nothing here may block for long, since every step of the agent starts here.

import base64
import errno
import json
import os
import selectors
import signal
import subprocess
import sys
import time

READ_BYTES = 65536
# Events queued for a slow agent beyond this stop the reading of step output until they are
# written: a step that prints faster than the agent takes it then waits, as it would on a pipe.
OUTBOX_HIGH = 4 * 1024 * 1024


class Child:
    __slots__ = ('id', 'process', 'pipes', 'status', 'stopping', 'linger_ms', 'linger_at')

    def __init__(self, step_id, process, pipes, linger_ms):
        self.id = step_id
        self.process = process
        self.pipes = pipes  # fd -> ('stdout' | 'stderr', file), while open
        self.status = None  # (code, signal) once reaped
        self.stopping = False
        self.linger_ms = linger_ms
        self.linger_at = None


class Launcher:
    def __init__(self, channel_fd):
        self.channel = channel_fd
        self.inbox = b''
        self.outbox = bytearray()
        self.children = {}  # id -> Child
        self.by_pid = {}
        self.output_paused = False
        self.selector = selectors.DefaultSelector()
        os.set_inheritable(channel_fd, False)
        os.set_blocking(channel_fd, False)
        self.selector.register(channel_fd, selectors.EVENT_READ, 'channel')
        # SIGCHLD wakes the loop through a pipe; reaping happens in the loop, not in the handler.
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(self.wake_r, selectors.EVENT_READ, 'wake')

    # -- events to the agent ---------------------------------------------------------------------

    def send(self, event):
        self.outbox += json.dumps(event, separators=(',', ':')).encode() + b'\n'
        self.flush()
        if len(self.outbox) > OUTBOX_HIGH and not self.output_paused:
            self.output_paused = True
            for child in self.children.values():
                for fd in child.pipes:
                    self.selector.unregister(fd)

    def flush(self):
        while self.outbox:
            try:
                n = os.write(self.channel, self.outbox)
            except BlockingIOError:
                # The agent is slow to read: wait for the channel in the loop (select on write).
                self.selector.modify(self.channel, selectors.EVENT_READ | selectors.EVENT_WRITE, 'channel')
                return
            except (BrokenPipeError, ConnectionResetError):
                self.disconnect()
            del self.outbox[:n]
        self.selector.modify(self.channel, selectors.EVENT_READ, 'channel')
        if self.output_paused:
            self.output_paused = False
            for child in self.children.values():
                for fd in child.pipes:
                    self.selector.register(fd, selectors.EVENT_READ, child)

    # -- requests from the agent -----------------------------------------------------------------

    def on_channel(self):
        try:
            data = os.read(self.channel, 65536)
        except BlockingIOError:
            return
        except (ConnectionResetError, OSError):
            data = b''
        if not data:
            self.disconnect()
        self.inbox += data
        while True:
            nl = self.inbox.find(b'\n')
            if nl < 0:
                break
            line, self.inbox = self.inbox[:nl], self.inbox[nl + 1:]
            if line.strip():
                self.on_request(json.loads(line))

    def on_request(self, msg):
        kind = msg.get('type')
        child = self.children.get(msg.get('id'))
        if kind == 'stopping':
            if child is not None:
                child.stopping = True
        elif kind == 'destroy-pipes':
            if child is not None:
                self.close_pipes(child)
        elif kind == 'spawn':
            self.spawn(msg)

    def spawn(self, msg):
        step_id = msg['id']
        env = {str(k): str(v) for k, v in msg['env'].items()}
        argv = [msg['file']] + list(msg['args'])
        shell = msg.get('viaShell')
        try:
            try:
                child = self.start(argv, msg['cwd'], env)
            except FileNotFoundError:
                # Not found as a program: the shell reports it as it always would (exit 127, "not
                # found"), or finds what only it knows. (A missing cwd fails the same way again.)
                if shell is None:
                    raise
                child = self.start(['/bin/sh', '-c', shell], msg['cwd'], env)
        except OSError as e:
            code = errno.errorcode.get(e.errno, str(e.errno))
            self.send({'type': 'error', 'id': step_id, 'message': 'spawn %s %s' % (msg['file'], code), 'started': False})
            return
        except (ValueError, TypeError) as e:
            # What no process can be given (a NUL byte in an argument or variable): this step
            # fails, the launcher and the other steps carry on.
            self.send({'type': 'error', 'id': step_id, 'message': 'spawn %s: %s' % (msg['file'], e), 'started': False})
            return
        pipes = {child.stdout.fileno(): ('stdout', child.stdout), child.stderr.fileno(): ('stderr', child.stderr)}
        entry = Child(step_id, child, pipes, msg.get('lingerMs', 0))
        self.children[step_id] = entry
        self.by_pid[child.pid] = entry
        for fd in pipes:
            os.set_blocking(fd, False)
            if not self.output_paused:
                self.selector.register(fd, selectors.EVENT_READ, entry)
        self.send({'type': 'spawned', 'id': step_id, 'pid': child.pid})

    def start(self, argv, cwd, env):
        # subprocess uses vfork here (Python >= 3.10), searches the step's own PATH, closes every
        # other descriptor, and starts the program with all signals at their defaults
        # (restore_signals; posix_spawn would leave glibc's two internal ones ignored). The step
        # leads its own session and process group, as with Node's `detached`.
        return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, restore_signals=True, bufsize=0)

    # -- step processes --------------------------------------------------------------------------

    def on_pipe(self, fd, child):
        try:
            data = os.read(fd, READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        if not data:
            if not self.output_paused:
                self.selector.unregister(fd)
            child.pipes.pop(fd)[1].close()
            self.maybe_closed(child)
            return
        self.send({'type': 'data', 'id': child.id, 'stream': child.pipes[fd][0], 'data64': base64.b64encode(data).decode('ascii')})

    def reap(self):
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        for pid, child in list(self.by_pid.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, None  # reaped elsewhere: nothing in this process does that
            if done == 0:
                continue
            del self.by_pid[pid]
            child.process.returncode = -1  # for subprocess's bookkeeping: it must not wait again
            if status is None:
                child.status = (None, None)
            elif os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                try:
                    name = signal.Signals(sig).name
                except ValueError:
                    name = 'SIG%d' % sig
                child.status = (None, name)
            else:
                child.status = (os.WEXITSTATUS(status), None)
            # Whatever the step left behind in its group (a background job holding our pipes)
            # ends with it, unless the agent is stopping it and gives the group its grace period.
            if not child.stopping:
                kill_group(pid)
            # A process that left the group (setsid) may hold the pipes forever: stop waiting.
            child.linger_at = time.monotonic() + child.linger_ms / 1000
            self.maybe_closed(child)

    def close_pipes(self, child):
        for fd, (_, pipe) in list(child.pipes.items()):
            if not self.output_paused:
                self.selector.unregister(fd)
            pipe.close()
        child.pipes.clear()
        self.maybe_closed(child)

    def maybe_closed(self, child):
        if child.status is None or child.pipes or child.id not in self.children:
            return
        del self.children[child.id]
        code, sig = child.status
        self.send({'type': 'close', 'id': child.id, 'code': code, 'signal': sig})

    def disconnect(self):
        # The agent is gone: so is everything it started.
        for child in self.children.values():
            kill_group(child.process.pid)
        os._exit(0)

    def run(self):
        self.send({'type': 'ready'})
        while True:
            timeout = None
            now = time.monotonic()
            for child in list(self.children.values()):
                if child.linger_at is None or not child.pipes:
                    continue
                if child.linger_at <= now:
                    self.close_pipes(child)
                else:
                    left = child.linger_at - now
                    timeout = left if timeout is None else min(timeout, left)
            for key, mask in self.selector.select(timeout):
                if key.data == 'channel':
                    if mask & selectors.EVENT_WRITE:
                        self.flush()
                    if mask & selectors.EVENT_READ:
                        self.on_channel()
                elif key.data == 'wake':
                    self.reap()
                elif key.fd in getattr(key.data, 'pipes', {}):
                    self.on_pipe(key.fd, key.data)


def kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


if __name__ == '__main__':
    if sys.version_info < (3, 8) or 'NODE_CHANNEL_FD' not in os.environ:
        sys.exit(3)
    Launcher(int(os.environ['NODE_CHANNEL_FD'])).run()
