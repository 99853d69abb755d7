import type { z } from 'zod';

/**
 * A cross-field rule written once: the CEL expression goes into the generated CRD
 * (so the API server enforces it) and `holds` enforces the same rule in zod
 * (so `tensile validate`, the operator and the worker agree with the API server).
 * test/integration/crd-admission.test.ts sends the invalid-manifest table to a real API server, so the
 * two sides are checked against each other.
 */
export interface CrossFieldRule<T> {
  readonly cel: string;
  readonly message: string;
  /** Path of the offending field relative to the object the rule sits on, e.g. ['minReplicas']. */
  readonly field: readonly string[];
  readonly holds: (value: T) => boolean;
}

/** A rule that compares a field with its previous value; only the API server can check it. */
export interface TransitionRule {
  readonly cel: string;
  readonly message: string;
}

export interface KubernetesValidation {
  rule: string;
  message: string;
  fieldPath?: string;
}

function celFieldPath(field: readonly string[]): string | undefined {
  if (field.length === 0) return undefined;
  return field.map((segment) => `.${segment}`).join('');
}

/** Attaches cross-field rules to an object schema, both as zod refinements and as CRD CEL rules. */
export function withRules<S extends z.ZodType>(
  schema: S,
  rules: readonly CrossFieldRule<z.output<S>>[],
  transitions: readonly TransitionRule[] = [],
): S {
  let refined: z.ZodType = schema;
  for (const rule of rules) {
    // A rule about fields that are themselves invalid would only repeat the same problem in other words.
    refined = refined.refine((value) => rule.holds(value as z.output<S>), {
      message: rule.message,
      path: [...rule.field],
      when: (payload) => payload.issues.length === 0,
    });
  }
  const validations: KubernetesValidation[] = [
    ...rules.map((rule) => {
      const fieldPath = celFieldPath(rule.field);
      return fieldPath === undefined
        ? { rule: rule.cel, message: rule.message }
        : { rule: rule.cel, message: rule.message, fieldPath };
    }),
    ...transitions.map((t) => ({ rule: t.cel, message: t.message })),
  ];
  return refined.meta({ 'x-kubernetes-validations': validations }) as unknown as S;
}

/** A transition rule that keeps a field unchanged once the object exists. */
export function immutable(field: string): TransitionRule {
  return { cel: 'self == oldSelf', message: `${field} is immutable once the TrainingJob exists` };
}
