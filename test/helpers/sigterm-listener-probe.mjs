// Loaded with --import into a process a test signals: one line on standard error as soon as the
// process first listens for SIGTERM, so the test can signal it at that moment.
const timer = setInterval(() => {
  if (process.listenerCount('SIGTERM') === 0) return;
  clearInterval(timer);
  process.stderr.write('probe: listening for SIGTERM\n');
}, 1);
timer.unref();
