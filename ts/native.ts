// The napi-generated loader (../index.js) picks the addon for this platform.
import * as native from '../index.js';

export = native;
