import type { Condition, ConditionType } from '../api/training-job.ts';

export type ConditionStatus = Condition['status'];

export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: ConditionType,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

export function isTrue(conditions: readonly Condition[] | undefined, type: ConditionType): boolean {
  return findCondition(conditions, type)?.status === 'True';
}

/**
 * Sets a condition; `lastTransitionTime` moves only when the status flips, so it tells when the
 * condition became what it is, not when it was last written.
 */
export function setCondition(
  conditions: readonly Condition[],
  type: ConditionType,
  status: ConditionStatus,
  reason: string,
  message: string,
  now: Date,
): Condition[] {
  const existing = findCondition(conditions, type);
  const lastTransitionTime =
    existing !== undefined && existing.status === status
      ? existing.lastTransitionTime
      : now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  const next: Condition = { type, status, reason, message, lastTransitionTime };
  const out = conditions.filter((c) => c.type !== type);
  out.push(next);
  return out.sort((a, b) => CONDITION_ORDER.indexOf(a.type) - CONDITION_ORDER.indexOf(b.type));
}

/** Only touches a condition that is already there (e.g. clear PodsPending once it was raised). */
export function clearCondition(
  conditions: readonly Condition[],
  type: ConditionType,
  reason: string,
  message: string,
  now: Date,
): Condition[] {
  if (findCondition(conditions, type) === undefined) return [...conditions];
  return setCondition(conditions, type, 'False', reason, message, now);
}

const CONDITION_ORDER: readonly ConditionType[] = [
  'Created',
  'Running',
  'Rescaling',
  'PodsPending',
  'Stragglers',
  'Suspended',
  'Succeeded',
  'Failed',
];
