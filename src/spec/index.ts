// The pipeline spec's public API: load and validate pipeline files, publish their JSON Schema,
// and substitute a step's placeholders. Everything outside src/spec/ imports from here.

export { loadPipeline, readPipelineFile, parsePipeline, parsePipelineData, isJsonExact, sendableAsData, type YamlCache, type PipelineSource, MAX_PIPELINE_BYTES, MAX_ALIAS_COUNT, MAX_NESTING_DEPTH, type ParseOptions } from './parse.js'
export { pipelineJsonSchema } from './schema.js'
export { resolveCommand, shellQuote, type ResolvedCommand } from './placeholders.js'
export * from './types.js'
