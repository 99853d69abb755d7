/** What `tensile export` reports as its error line (exit 1), rather than a stack. */
export class ExportError extends Error {
  override readonly name = 'ExportError';
}
