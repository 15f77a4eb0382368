import type { Endpoint } from "../../core/endpoint.ts";
import type { LoadTracker } from "../../core/load/load-tracker.ts";
import type { Candidate, LoadReport, LoadReportCarrier } from "../../core/picker.ts";
import type { SkillCarrier } from "../../core/policies/resume.ts";
import { SKILL_METRIC_PREFIX, skillsFromNamedMetrics } from "../../core/skills.ts";
import { reportProblem } from "../../health/orca-client.ts";
import { DEFAULT_MAX_ENTRIES, decodeOrcaLoadReport, type OrcaLoadReport } from "../../health/orca-proto.ts";

/** The trailer a backend puts its per-call ORCA report in (gRFC A51), binary. */
export const PER_CALL_REPORT_TRAILER = "endpoint-load-metrics-bin";

/** Largest per-call report decoded, bytes; a larger one is ignored. */
export const MAX_PER_CALL_REPORT_BYTES = 64 * 1024;

/** Most skill classes kept from one report (as the channel's `maxSkillClasses` default). */
export const MAX_SKILL_CLASSES = 100_000;

/**
 * One backend as the core policies see it: the Candidate of the grpc-js adapter. Like the channel's
 * `Backend`, it carries the backend's latest load report (weighted_round_robin) and résumé (resume),
 * each replaced by a new object per report and never mutated (the policies tell a new report by its
 * identity).
 */
export class ClientCandidate implements Candidate, SkillCarrier, LoadReportCarrier {
  readonly key: string;
  readonly endpoint: Endpoint;
  readonly load: LoadTracker;
  skills: ReadonlyMap<string, number> | undefined = undefined;
  loadReport: LoadReport | undefined = undefined;
  /** Reports accepted, and reports dropped as malformed or unusable (per-call and out-of-band). */
  reports = 0;
  badReports = 0;

  constructor(endpoint: Endpoint, load: LoadTracker) {
    this.key = endpoint.key;
    this.endpoint = endpoint;
    this.load = load;
  }

  /**
   * Takes one decoded report. Out-of-band reports replace the résumé every time, as the balancer's
   * channel does; a per-call report replaces it only when it carries skills, so a backend that sends
   * per-call utilization and out-of-band résumés keeps its résumé.
   */
  applyReport(report: OrcaLoadReport, now: number, perCall: boolean): void {
    if (reportProblem(report) !== undefined) {
      this.badReports++;
      return;
    }
    this.reports++;
    if (!perCall || hasSkills(report.namedMetrics)) {
      this.skills = skillsFromNamedMetrics(report.namedMetrics, MAX_SKILL_CLASSES);
    }
    this.loadReport = {
      at: now,
      // rps_fractional, or the deprecated integer rps from a server that sends only that.
      qps: report.rpsFractional > 0 ? report.rpsFractional : report.rps,
      eps: report.eps,
      cpuUtilization: report.cpuUtilization,
      applicationUtilization: report.applicationUtilization,
    };
  }

  /** Decodes a per-call report trailer value; malformed or oversized ones count as bad and are dropped. */
  applyTrailer(value: unknown, now: number): void {
    if (!Buffer.isBuffer(value)) return;
    if (value.length > MAX_PER_CALL_REPORT_BYTES) {
      this.badReports++;
      return;
    }
    let report: OrcaLoadReport;
    try {
      report = decodeOrcaLoadReport(value, DEFAULT_MAX_ENTRIES);
    } catch {
      this.badReports++;
      return;
    }
    this.applyReport(report, now, true);
  }
}

function hasSkills(named: Readonly<Record<string, number>>): boolean {
  for (const key in named) if (key.startsWith(SKILL_METRIC_PREFIX)) return true;
  return false;
}
