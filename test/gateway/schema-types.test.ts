import { readFileSync } from 'node:fs';
import { buildSchema, isNonNullType, type GraphQLObjectType } from 'graphql';
import { describe, expect, it } from 'vitest';
import { generateSchemaTypes, readSchemaSdl, TYPES_PATH } from '../../src/gateway/codegen.ts';

describe('schema.graphql is the single source of truth', () => {
  it('src/gateway/schema-types.ts is regenerated from it (drift fails here)', () => {
    expect(readFileSync(TYPES_PATH, 'utf8')).toBe(generateSchemaTypes(readSchemaSdl()));
  });

  it('keeps the names outside clients rely on', () => {
    const schema = buildSchema(readSchemaSdl());
    const field = (t: GraphQLObjectType | null | undefined, name: string) => {
      const f = t?.getFields()[name];
      expect(f, `${t?.name}.${name}`).toBeTruthy();
      return f!;
    };
    const sub = schema.getSubscriptionType();
    const mut = schema.getMutationType();
    const q = schema.getQueryType();
    expect(String(field(sub, 'understand').type)).toBe('UnderstandEvent!');
    expect(field(sub, 'understand').args.map((a) => `${a.name}:${a.type}`)).toEqual(['input:UnderstandInput!']);
    expect(field(sub, 'imageJob').args.map((a) => `${a.name}:${a.type}`)).toEqual(['id:ID!', 'after:Int']);
    expect(String(field(sub, 'imageJob').type)).toBe('ImageEvent!');
    expect(String(field(mut, 'generateImage').type)).toBe('ImageJob!');
    expect(String(field(mut, 'editImage').type)).toBe('ImageJob!');
    expect(field(mut, 'cancelJob').args.map((a) => `${a.name}:${a.type}`)).toEqual(['id:ID!']);
    expect(String(field(mut, 'cancelJob').type)).toBe('Boolean!');
    field(mut, 'createSession');
    field(q, 'models');
    field(q, 'health');
    const obj = (n: string) => schema.getType(n) as GraphQLObjectType;
    expect(String(field(obj('ImageJob'), 'previews').type)).toBe('[ImageFrame!]!');
    expect(String(field(obj('ImageJob'), 'result').type)).toBe('ImageFrame!');
    field(obj('ImageJob'), 'id');
    for (const f of ['stage', 'nfe', 'step', 'elapsedMs', 'seed', 'image']) field(obj('ImageFrame'), f);
    for (const f of ['mimeType', 'width', 'height', 'base64', 'url', 'sha256']) field(obj('Image'), f);
    for (const f of ['text', 'tokenIds', 'acceptedTokens', 'draftedTokens', 'done', 'finishReason', 'usage', 'timings', 'speculation']) field(obj('UnderstandEvent'), f);
    for (const f of ['meanAcceptedLength', 'acceptanceRate', 'drafts']) field(obj('SpeculationStats'), f);
    for (const f of ['queueMs', 'timeToFirstTokenMs', 'tokensPerSecond']) field(obj('Timings'), f);
    const input = (n: string) => Object.keys((schema.getType(n) as unknown as { getFields(): object }).getFields());
    expect(input('UnderstandInput')).toEqual(expect.arrayContaining(['prompt', 'image', 'maxTokens', 'temperature', 'topP', 'topK', 'seed', 'stop', 'speculation', 'sessionId']));
    expect(input('ImageInput')).toEqual(expect.arrayContaining(['base64', 'dataUrl', 'upload']));
    expect(input('GenerateImageInput')).toEqual(expect.arrayContaining(['prompt', 'seed', 'mode', 'cfgTextScale', 'cfgImageScale']));
    expect(input('EditImageInput')).toEqual(expect.arrayContaining(['image', 'instruction']));
    const values = (n: string) => (schema.getType(n) as unknown as { getValues(): { name: string }[] }).getValues().map((v) => v.name);
    expect(values('SpeculationMode')).toEqual(expect.arrayContaining(['AUTO', 'OFF', 'CHAIN', 'TREE']));
    expect(values('GenerationMode')).toEqual(['PROGRESSIVE', 'ONE_STEP', 'SIX_STEP', 'BASELINE']);
    expect(values('FrameStage')).toEqual(['PREVIEW', 'FINAL']);
    expect(isNonNullType(field(obj('ImageFrame'), 'image').type)).toBe(true);
  });
});
